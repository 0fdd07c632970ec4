-- Shared by every cfn script (prepended at load time).
-- Events are appended to the swarm's bounded stream and announced on its notify
-- channel in the same script as the state change they describe.
local function emit(events_key, maxlen, channel, now, etype, data)
  redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*',
    'type', etype, 'ts', now, 'data', cjson.encode(data))
  redis.call('PUBLISH', channel, 'ev')
end
