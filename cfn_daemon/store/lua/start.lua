-- An agent begins a task it read from its work stream.
-- KEYS: task, agent hash, events, the 7 status indexes
-- ARGV: task id, agent id, now, maxlen, channel
-- Returns {1, task fields...} to run it, or {0, status} to skip (cancelled, done, lost).
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'assigned' and st ~= 'running' then return {0, st or 'missing'} end
if st == 'assigned' then
  local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  set_status(ARGV[1], 'assigned', 'running', ARGV[3])
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_ms', ARGV[3], 'updated_ms', ARGV[3])
  emit(KEYS[3], ARGV[4], ARGV[5], ARGV[3], 'task.started',
    {task = ARGV[1], agent = ARGV[2], attempt = attempt})
end
redis.call('HSET', KEYS[2], 'status', 'busy', 'current_task', ARGV[1])
return {1, redis.call('HGETALL', KEYS[1])}
