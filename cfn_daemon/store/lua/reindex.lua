-- Rebuild the status indexes for some tasks (a swarm written by an older cfnd).
-- KEYS: one task hash per id in ARGV, then the 7 status indexes
-- ARGV: task ids...
-- Atomic per batch, so a task moved by another script meanwhile is indexed once.
for i = 1, #ARGV do
  local tid = ARGV[i]
  local st, updated = unpack(redis.call('HMGET', KEYS[i], 'status', 'updated_ms'))
  if st and STATUS_SLOT[st] then
    for name, _ in pairs(STATUS_SLOT) do
      if name ~= st then redis.call('ZREM', status_key(name), tid) end
    end
    redis.call('ZADD', status_key(st), tonumber(updated or '0') or 0, tid)
  end
end
return #ARGV
