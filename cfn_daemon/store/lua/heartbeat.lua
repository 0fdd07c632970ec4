-- KEYS: heartbeats zset, agent hash, current task hash (or the agent hash again)
-- ARGV: agent id, now, has task (1/0)
-- Returns {agent status, desired state, task cancel flag}.
local status = redis.call('HGET', KEYS[2], 'status')
if status == 'lost' or status == 'failed' or status == 'stopped' or not status then
  return {status or 'missing', '', ''}
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local desired = redis.call('HGET', KEYS[2], 'desired') or ''
local cancel = ''
if ARGV[3] == '1' then cancel = redis.call('HGET', KEYS[3], 'cancel') or '' end
return {status, desired, cancel}
