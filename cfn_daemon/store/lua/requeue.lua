-- Put a task back on its queue: a retry whose backoff ran out, a task reclaimed from
-- a lost agent, or an explicit retry / DLQ requeue.
-- KEYS: task, queue, events, delayed zset, dlq, the 7 status indexes
-- ARGV: task id, now, maxlen, channel, reason, allowed statuses (comma separated),
--       reset attempts (1/0)
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if not string.find(',' .. ARGV[6] .. ',', ',' .. st .. ',', 1, true) then
  -- An error, not the status: a caller must never mistake "not moved" for "queued".
  return redis.error_reply('NOTALLOWED ' .. st)
end
if ARGV[5] == 'agent-lost' then
  -- Another replica may still be running it.
  local pending = redis.call('HINCRBY', KEYS[1], 'pending_replicas', -1)
  if pending > 0 then return 'replica-running' end
  local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
  local max_attempts = tonumber(redis.call('HGET', KEYS[1], 'max_attempts') or '1')
  if attempts >= max_attempts then
    local err = 'agent lost while running the last allowed attempt'
    set_status(ARGV[1], st, 'failed', ARGV[2])
    local dlq_entry = redis.call('XADD', KEYS[5], '*', 't', ARGV[1], 'error', err)
    redis.call('HSET', KEYS[1], 'status', 'failed', 'error', err, 'updated_ms', ARGV[2],
      'finished_ms', ARGV[2], 'dlq_entry', dlq_entry)
    emit(KEYS[3], ARGV[3], ARGV[4], ARGV[2], 'task.failed',
      {task = ARGV[1], attempts = attempts, error = err}, 'done:' .. ARGV[1])
    return 'failed'
  end
end
local fields = {'status', 'queued', 'agent', '', 'updated_ms', ARGV[2], 'cancel', '',
  'enqueued_ms', ARGV[2]}
if ARGV[7] == '1' then
  fields[#fields + 1] = 'attempts'; fields[#fields + 1] = '0'
  fields[#fields + 1] = 'error'; fields[#fields + 1] = ''
  fields[#fields + 1] = 'result'; fields[#fields + 1] = ''
end
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[7] == '1' then
  -- A manual retry or DLQ requeue: its dead-letter entry goes in the same step.
  local dlq_entry = redis.call('HGET', KEYS[1], 'dlq_entry')
  if dlq_entry and dlq_entry ~= '' then
    redis.call('XDEL', KEYS[5], dlq_entry)
    redis.call('HDEL', KEYS[1], 'dlq_entry')
  end
end
set_status(ARGV[1], st, 'queued', ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[1])
queue_entry(KEYS[2], ARGV[1], redis.call('HMGET', KEYS[1], 'type', 'target'), ARGV[2])
emit(KEYS[3], ARGV[3], ARGV[4], ARGV[2], 'task.requeued', {task = ARGV[1], reason = ARGV[5]},
  'queued')
return 'queued'
