-- Raise a swarm's max_agents to ARGV[1] unless it is already at least that (never lowers
-- it: concurrent `swarm scale` calls end at the largest).
-- KEYS: swarm state hash
-- ARGV: the new cap
-- Returns the cap now in force, or 0 when the swarm does not exist.
local current = tonumber(redis.call('HGET', KEYS[1], 'max_agents'))
if current == nil then return 0 end
local wanted = tonumber(ARGV[1])
if wanted > current then
  redis.call('HSET', KEYS[1], 'max_agents', wanted)
  return wanted
end
return current
