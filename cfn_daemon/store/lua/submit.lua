-- KEYS: task, tasks index, queue, events, idempotency key (or the task key again),
--       the 7 status indexes
-- ARGV: id, now, maxlen, channel, event-data JSON, idempotency TTL ms (0: no key),
--       direct ('1': the queue is the type's direct stream, read by its agents
--       themselves, so the dispatcher is not woken), field, value, ...
-- Returns 1 created, 0 the id exists, or the id of the task already submitted under
-- the same idempotency key (a client's retry: nothing new is queued).
if tonumber(ARGV[6]) > 0 then
  local existing = redis.call('GET', KEYS[5])
  if existing then return existing end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if tonumber(ARGV[6]) > 0 then redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[6]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
set_status(ARGV[1], nil, 'queued', ARGV[2])
if ARGV[7] == '1' then
  redis.call('XADD', KEYS[3], '*', 't', ARGV[1])
  emit(KEYS[4], ARGV[3], ARGV[4], ARGV[2], 'task.queued', cjson.decode(ARGV[5]))
  return 1
end
local type_target = {}
for i = 8, #ARGV - 1, 2 do
  if ARGV[i] == 'type' then type_target[1] = ARGV[i + 1]
  elseif ARGV[i] == 'target' then type_target[2] = ARGV[i + 1] end
end
queue_entry(KEYS[3], ARGV[1], type_target, ARGV[2])
emit(KEYS[4], ARGV[3], ARGV[4], ARGV[2], 'task.queued', cjson.decode(ARGV[5]), 'queued')
return 1
