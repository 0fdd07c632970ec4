-- KEYS: task, events, delayed zset, the 7 status indexes
-- ARGV: task id, now, maxlen, channel
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return st end
set_status(ARGV[1], st, 'cancelled', ARGV[2])
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancel', '1', 'updated_ms', ARGV[2],
  'finished_ms', ARGV[2], 'error', 'cancelled')
redis.call('ZREM', KEYS[3], ARGV[1])
emit(KEYS[2], ARGV[3], ARGV[4], ARGV[2], 'task.cancelled', {task = ARGV[1], was = st},
  'done:' .. ARGV[1])
return 'cancelled'
