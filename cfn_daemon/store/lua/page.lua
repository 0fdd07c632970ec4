-- One page of an index zset, newest (highest score) first, after a cursor.
-- KEYS: the index zset
-- ARGV: cursor score ('' for the first page), cursor member, limit
-- Returns {member, score, ...}. The cursor is the last entry of the previous page: if
-- it is still there at that score the page continues right after it (ties included);
-- if it moved or was deleted, after its score.
local key, limit = KEYS[1], tonumber(ARGV[3])
if ARGV[1] == '' then return redis.call('ZREVRANGE', key, 0, limit - 1, 'WITHSCORES') end
local score = redis.call('ZSCORE', key, ARGV[2])
if score and tonumber(score) == tonumber(ARGV[1]) then
  local rank = redis.call('ZREVRANK', key, ARGV[2])
  return redis.call('ZREVRANGE', key, rank + 1, rank + limit, 'WITHSCORES')
end
return redis.call('ZREVRANGEBYSCORE', key, '(' .. ARGV[1], '-inf', 'WITHSCORES', 'LIMIT', 0,
  limit)
