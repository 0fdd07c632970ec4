-- Append one chunk to a task text being uploaded (``task.upload``).
-- KEYS: the upload string
-- ARGV: chunk, 1 for a new upload (0: it must exist), max bytes, time to live s
-- Returns the size so far; -1 the upload is unknown or expired; -2 over the limit
-- (the upload is deleted).
if ARGV[2] == '0' and redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local size = redis.call('APPEND', KEYS[1], ARGV[1])
if size > tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  return -2
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return size
