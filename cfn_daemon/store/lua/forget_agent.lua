-- Forget an agent that has been gone (stopped, failed, lost) since before a cutoff:
-- its record, work stream, inbox, heartbeat and vote token. Re-checked here, so an
-- agent that came back (re-registered) in the meantime is kept.
-- KEYS: agents set, agent hash, work stream, inbox, heartbeats zset, tokens hash,
--       perf list
-- ARGV: agent id, cutoff ms, now ms
local st, gone = unpack(redis.call('HMGET', KEYS[2], 'status', 'gone_ms'))
if st ~= 'stopped' and st ~= 'failed' and st ~= 'lost' then
  if not st then redis.call('SREM', KEYS[1], ARGV[1]) end  -- a dangling member
  return 0
end
if not gone or gone == '' then
  -- Gone before cfnd kept the time (an older cfnd): its time to live starts now.
  redis.call('HSET', KEYS[2], 'gone_ms', ARGV[3])
  return 0
end
if tonumber(gone) > tonumber(ARGV[2]) then return 0 end
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4], KEYS[7])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
return 1
