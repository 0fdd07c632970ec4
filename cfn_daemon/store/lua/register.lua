-- An agent (re)joins: record it, create its work group, announce it.
-- KEYS: agents set, agent hash, heartbeats zset, work stream, events
-- ARGV: agent id, now, maxlen, channel, event-data JSON, field, value, ...
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], unpack(ARGV, 6))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
local ok = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[4], 'agent', '0', 'MKSTREAM')
emit(KEYS[5], ARGV[3], ARGV[4], ARGV[2], 'agent.registered', cjson.decode(ARGV[5]))
redis.call('PUBLISH', ARGV[4], 'agent')
return 1
