-- KEYS: heartbeats zset, agent hash, current task hash (or the agent hash again),
--       the swarm's supervisor lease
-- ARGV: agent id, now, has task (1/0)
-- Returns {agent status, desired state, task cancel flag, supervised (1/0)}.
local supervised = redis.call('EXISTS', KEYS[4])
local status = redis.call('HGET', KEYS[2], 'status')
if status == 'lost' or status == 'failed' or status == 'stopped' or not status then
  return {status or 'missing', '', '', supervised}
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local desired = redis.call('HGET', KEYS[2], 'desired') or ''
local cancel = ''
if ARGV[3] == '1' then cancel = redis.call('HGET', KEYS[3], 'cancel') or '' end
return {status, desired, cancel, supervised}
