-- An agent finished a task: store the result once, ack, update the agent, and
-- decide success / retry with backoff / dead-letter, in one round trip.
-- It also keeps the observability records (docs/OPERATIONS.md): the agent's last
-- executions (a capped list) and the swarm's task counters and duration histogram.
-- KEYS: task, the stream the entry is in (work or direct), agent hash, events,
--       delayed zset, dlq, swarm stats hash,
--       agent perf list, the 7 status indexes
-- ARGV: task id, agent id, work entry id, now, maxlen, channel, ok (1/0), result JSON,
--       duration ms, retry base ms, retry max ms, error text, executions kept,
--       the result's seal (the agent's signature, core/seals.py; '' if none),
--       duration bucket bounds in ms (ascending) ...
local now = tonumber(ARGV[4])
redis.call('XACK', KEYS[2], 'agent', ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
-- Each hash is read once (HMGET) and written once (HSET); the agent's capacity change
-- (``cap:<agent>:<load>:<status>``) is announced with the outcome's event, in one PUBLISH.
local done_field = 'tasks_failed'
if ARGV[7] == '1' then done_field = 'tasks_done' end
local a = redis.call('HMGET', KEYS[3], 'load', 'ewma_ms', 'current_task', done_field)
local load = math.max(0, (tonumber(a[1] or '0') or 0) - 1)
local d = tonumber(ARGV[9])
local prev = tonumber(a[2] or '')
local ewma = d
if prev then ewma = 0.8 * prev + 0.2 * d end
local astatus = 'idle'
if load > 0 then astatus = 'busy' end
local cur = a[3]
if cur == ARGV[1] then cur = '' end
redis.call('HSET', KEYS[3], 'load', load, 'ewma_ms', tostring(ewma), 'status', astatus,
  'current_task', cur or '', done_field, (tonumber(a[4] or '0') or 0) + 1)
local capw = 'cap:' .. ARGV[2] .. ':' .. load .. ':' .. astatus  -- the dispatcher's view

local t = redis.call('HMGET', KEYS[1], 'type', 'status', 'error')
local ttype = t[1] or '?'
local st = t[2]
local counted = st == 'running' or st == 'assigned'  -- else a duplicate, not counted
-- Capped at ARGV[13]; trimmed only once 64 past the cap (one LTRIM per 64 executions).
if redis.call('LPUSH', KEYS[8], cjson.encode({ts = now, type = ttype, task = ARGV[1],
    ms = d, ok = ARGV[7] == '1'})) > tonumber(ARGV[13]) + 64 then
  redis.call('LTRIM', KEYS[8], 0, tonumber(ARGV[13]) - 1)
end
-- The duration histogram (cumulative buckets: count, sum and every bucket it falls in)
-- and the outcome's counter, in one HMGET and one HSET.
local dur = 'dur:' .. ttype .. ':'
local hist = {dur .. 'count', dur .. 'sum_ms'}
if counted then
  if ARGV[7] == '1' then hist[3] = 'done' else hist[3] = 'failed' end
end
for i = 15, #ARGV do
  if d <= tonumber(ARGV[i]) then hist[#hist + 1] = dur .. 'le:' .. ARGV[i] end
end
local h = redis.call('HMGET', KEYS[7], unpack(hist))
local put = {hist[1], string.format('%d', (tonumber(h[1] or '0') or 0) + 1),
  hist[2], string.format('%.17g', (tonumber(h[2] or '0') or 0) + d)}
for i = 3, #hist do
  put[#put + 1] = hist[i]; put[#put + 1] = string.format('%d', (tonumber(h[i] or '0') or 0) + 1)
end
redis.call('HSET', KEYS[7], unpack(put))

if not counted then
  -- A re-delivery or a losing replica: its result is not stored (one per task).
  emit(KEYS[4], ARGV[5], ARGV[6], ARGV[4], 'task.duplicate',
    {task = ARGV[1], agent = ARGV[2], ok = ARGV[7] == '1', error = ARGV[12], duration_ms = d},
    capw)
  return 'duplicate'
end
if ARGV[7] == '1' then
  -- 'cancel' stops a replica still running it (reliability strategy) at its next heartbeat.
  set_status(ARGV[1], st, 'succeeded', now)
  redis.call('HSET', KEYS[1], 'status', 'succeeded', 'result', ARGV[8], 'seal', ARGV[14],
    'cancel', '1', 'updated_ms', ARGV[4], 'finished_ms', ARGV[4], 'agent', ARGV[2])
  if t[3] and t[3] ~= '' then redis.call('HSET', KEYS[1], 'error', '') end  -- an earlier try's
  emit(KEYS[4], ARGV[5], ARGV[6], ARGV[4], 'task.succeeded',
    {task = ARGV[1], agent = ARGV[2], duration_ms = d}, capw .. ' done:' .. ARGV[1])
  return 'succeeded'
end
redis.call('HSET', KEYS[1], 'result', ARGV[8], 'seal', ARGV[14], 'error', ARGV[12],
  'updated_ms', ARGV[4])
local pending = redis.call('HINCRBY', KEYS[1], 'pending_replicas', -1)
if pending > 0 then
  redis.call('PUBLISH', ARGV[6], capw)
  return 'waiting'
end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
local max_attempts = tonumber(redis.call('HGET', KEYS[1], 'max_attempts') or '1')
if attempts < max_attempts then
  local delay = math.min(tonumber(ARGV[10]) * 2 ^ (attempts - 1), tonumber(ARGV[11]))
  redis.call('HINCRBY', KEYS[7], 'retried', 1)
  set_status(ARGV[1], st, 'retrying', now)
  redis.call('HSET', KEYS[1], 'status', 'retrying', 'agent', '')
  redis.call('ZADD', KEYS[5], now + delay, ARGV[1])
  emit(KEYS[4], ARGV[5], ARGV[6], ARGV[4], 'task.retrying',
    {task = ARGV[1], agent = ARGV[2], attempt = attempts, delay_ms = delay, error = ARGV[12]},
    capw)
  return 'retrying'
end
redis.call('HINCRBY', KEYS[7], 'dead_lettered', 1)
set_status(ARGV[1], st, 'failed', now)
local dlq_entry = redis.call('XADD', KEYS[6], '*', 't', ARGV[1], 'error', ARGV[12])
redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_ms', ARGV[4], 'dlq_entry', dlq_entry)
emit(KEYS[4], ARGV[5], ARGV[6], ARGV[4], 'task.failed',
  {task = ARGV[1], agent = ARGV[2], attempts = attempts, error = ARGV[12]},
  capw .. ' done:' .. ARGV[1])
return 'failed'
