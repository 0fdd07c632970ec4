-- KEYS: task, tasks index, queue, events, the 7 status indexes
-- ARGV: id, now, maxlen, channel, event-data JSON, field, value, ...
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
set_status(ARGV[1], nil, 'queued', ARGV[2])
redis.call('XADD', KEYS[3], '*', 't', ARGV[1])
emit(KEYS[4], ARGV[3], ARGV[4], ARGV[2], 'task.queued', cjson.decode(ARGV[5]))
redis.call('PUBLISH', ARGV[4], 'queued')
return 1
