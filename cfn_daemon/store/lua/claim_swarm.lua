-- Claim a swarm id under the daemon's swarm cap, atomically (one key: cluster-safe).
-- KEYS: swarms set
-- ARGV: swarm id, max swarms (0 = no cap)
-- Returns 1 claimed, 0 the id exists already, -1 the cap is reached (nothing changed).
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
local cap = tonumber(ARGV[2]) or 0
if cap > 0 and redis.call('SCARD', KEYS[1]) >= cap then return -1 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
