-- Move one queue entry to one or more agents' work streams (replicas), atomically.
-- KEYS: task, queue, events, then (agent hash, work stream) per agent, the 7 status indexes
-- ARGV: task id, queue entry id, now, maxlen, channel, dispatch group, via, agent ids...
-- Returns 1 assigned, 0 dropped (task no longer queued), -1 kept (an agent is gone),
-- -2 kept (an agent is full: the dispatcher's in-memory view of the agents was stale).
for i = 8, #ARGV do
  local a = redis.call('HMGET', KEYS[4 + (i - 8) * 2], 'status', 'load', 'concurrency')
  if a[1] ~= 'idle' and a[1] ~= 'busy' then return -1 end
  if (tonumber(a[2] or '0') or 0) >= (tonumber(a[3] or '1') or 1) then return -2 end
end
-- The status, and each agent's incarnation mark from an earlier delivery (if any).
local fields = {'status', 'pending_replicas'}
for i = 8, #ARGV do fields[#fields + 1] = 'inc:' .. ARGV[i] end
local got = redis.call('HMGET', KEYS[1], unpack(fields))
local status = got[1]
redis.call('XACK', KEYS[2], ARGV[6], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
if status ~= 'queued' then return 0 end
local agents = {}
local stale = {}
for i = 8, #ARGV do
  local n = i - 8
  redis.call('XADD', KEYS[5 + n * 2], '*', 't', ARGV[1])
  redis.call('HINCRBY', KEYS[4 + n * 2], 'load', 1)
  -- A new delivery: no incarnation ran it yet.
  if got[n + 3] then stale[#stale + 1] = fields[n + 3] end
  agents[#agents + 1] = ARGV[i]
end
if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
set_status(ARGV[1], 'queued', 'assigned', ARGV[3])
redis.call('HSET', KEYS[1], 'status', 'assigned', 'agent', table.concat(agents, ','),
  'updated_ms', ARGV[3])
-- Replicas still to report: stored only when not the one a missing field stands for.
if #agents > 1 or got[2] then redis.call('HSET', KEYS[1], 'pending_replicas', #agents) end
emit(KEYS[3], ARGV[4], ARGV[5], ARGV[3], 'task.assigned',
  {task = ARGV[1], agents = agents, via = ARGV[7]})
return 1
