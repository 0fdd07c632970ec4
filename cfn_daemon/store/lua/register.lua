-- An agent (re)joins: record it, create its work group, announce it.
-- KEYS: agents set, agent hash, heartbeats zset, work stream, events, swarm state hash
-- ARGV: agent id, now, maxlen, channel, event-data JSON, agent key prefix, cap,
--       field, value, ...
-- The swarm's agent cap (its max_agents, or ARGV[7] when lower; 0 = none) is checked
-- here, in the same script that adds the agent, so concurrent joins (local spawns of
-- several cfnds, remote cfn-agents) can never take the swarm past it. An agent that is
-- already live (a placeholder cfnd made for it, a re-registration) keeps its place.
local LIVE = {starting = true, idle = true, busy = true, draining = true}
local current = redis.call('HGET', KEYS[2], 'status')
if not (current and LIVE[current]) then
  local cap = tonumber(redis.call('HGET', KEYS[6], 'max_agents') or '')
  local limit = tonumber(ARGV[7]) or 0
  if limit > 0 and (cap == nil or limit < cap) then cap = limit end
  if cap ~= nil then
    local live = 0
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
      -- Same hash tag as KEYS[1]: the record is in this slot (Redis Cluster too).
      if LIVE[redis.call('HGET', ARGV[6] .. id, 'status')] then live = live + 1 end
    end
    if live >= cap then
      return redis.error_reply('FULL ' .. live .. ' ' .. cap)
    end
  end
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], unpack(ARGV, 8))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
local ok = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[4], 'agent', '0', 'MKSTREAM')
emit(KEYS[5], ARGV[3], ARGV[4], ARGV[2], 'agent.registered', cjson.decode(ARGV[5]), 'agent')
return 1
