-- Retention: delete finished tasks that entered their status at or before a cutoff.
-- KEYS: tasks index, then one task hash per id in ARGV, then the 7 status indexes
-- ARGV: status (succeeded, failed or cancelled), cutoff ms, task ids...
-- Each task is re-checked here, atomically with its deletion: one that was retried
-- (or otherwise moved) since the caller read the index range is kept.
local status, cutoff = ARGV[1], tonumber(ARGV[2])
local idx = status_key(status)
local deleted = 0
for i = 3, #ARGV do
  local tid, task = ARGV[i], KEYS[i - 1]
  local score = tonumber(redis.call('ZSCORE', idx, tid) or '')
  local st = redis.call('HGET', task, 'status')
  if st == status and score and score <= cutoff then
    redis.call('UNLINK', task)
    redis.call('ZREM', KEYS[1], tid)
    redis.call('ZREM', idx, tid)
    deleted = deleted + 1
  elseif st ~= status then
    redis.call('ZREM', idx, tid)  -- a stale entry (the task is gone or moved on)
  end
end
return deleted
