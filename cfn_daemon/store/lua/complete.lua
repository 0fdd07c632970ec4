-- An agent finished a task: store the result once, ack, update the agent, and
-- decide success / retry with backoff / dead-letter, in one round trip.
-- It also keeps the observability records (docs/OPERATIONS.md): the agent's last
-- executions (a capped list) and the swarm's task counters and duration histogram.
-- KEYS: task, work stream, agent hash, events, delayed zset, dlq, swarm stats hash,
--       agent perf list, the 7 status indexes
-- ARGV: task id, agent id, work entry id, now, maxlen, channel, ok (1/0), result JSON,
--       duration ms, retry base ms, retry max ms, error text, executions kept,
--       the result's seal (the agent's signature, core/seals.py; '' if none),
--       duration bucket bounds in ms (ascending) ...
local now = tonumber(ARGV[4])
redis.call('XACK', KEYS[2], 'agent', ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
local load = redis.call('HINCRBY', KEYS[3], 'load', -1)
if load < 0 then load = 0; redis.call('HSET', KEYS[3], 'load', 0) end
local d = tonumber(ARGV[9])
local prev = tonumber(redis.call('HGET', KEYS[3], 'ewma_ms') or '')
local ewma = d
if prev then ewma = 0.8 * prev + 0.2 * d end
local astatus = 'idle'
if load > 0 then astatus = 'busy' end
local cur = redis.call('HGET', KEYS[3], 'current_task')
if cur == ARGV[1] then cur = '' end
redis.call('HSET', KEYS[3], 'ewma_ms', tostring(ewma), 'status', astatus, 'current_task', cur or '')
if ARGV[7] == '1' then redis.call('HINCRBY', KEYS[3], 'tasks_done', 1)
else redis.call('HINCRBY', KEYS[3], 'tasks_failed', 1) end
redis.call('PUBLISH', ARGV[6], 'agent')

local ttype = redis.call('HGET', KEYS[1], 'type') or '?'
redis.call('LPUSH', KEYS[8], cjson.encode({ts = now, type = ttype, task = ARGV[1],
  ms = d, ok = ARGV[7] == '1'}))
redis.call('LTRIM', KEYS[8], 0, tonumber(ARGV[13]) - 1)
local dur = 'dur:' .. ttype .. ':'
redis.call('HINCRBY', KEYS[7], dur .. 'count', 1)
redis.call('HINCRBYFLOAT', KEYS[7], dur .. 'sum_ms', d)
for i = 15, #ARGV do
  if d <= tonumber(ARGV[i]) then redis.call('HINCRBY', KEYS[7], dur .. 'le:' .. ARGV[i], 1) end
end

local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'running' and st ~= 'assigned' then
  -- A re-delivery or a losing replica: its result is not stored (one per task).
  emit(KEYS[4], ARGV[5], ARGV[6], ARGV[4], 'task.duplicate',
    {task = ARGV[1], agent = ARGV[2], ok = ARGV[7] == '1', error = ARGV[12], duration_ms = d})
  return 'duplicate'
end
if ARGV[7] == '1' then
  redis.call('HINCRBY', KEYS[7], 'done', 1)
  -- 'cancel' stops a replica still running it (reliability strategy) at its next heartbeat.
  set_status(ARGV[1], st, 'succeeded', now)
  redis.call('HSET', KEYS[1], 'status', 'succeeded', 'result', ARGV[8], 'seal', ARGV[14],
    'error', '', 'cancel', '1', 'updated_ms', ARGV[4], 'finished_ms', ARGV[4], 'agent', ARGV[2])
  emit(KEYS[4], ARGV[5], ARGV[6], ARGV[4], 'task.succeeded',
    {task = ARGV[1], agent = ARGV[2], duration_ms = d})
  redis.call('PUBLISH', ARGV[6], 'done:' .. ARGV[1])
  return 'succeeded'
end
redis.call('HINCRBY', KEYS[7], 'failed', 1)
redis.call('HSET', KEYS[1], 'result', ARGV[8], 'seal', ARGV[14], 'error', ARGV[12],
  'updated_ms', ARGV[4])
local pending = redis.call('HINCRBY', KEYS[1], 'pending_replicas', -1)
if pending > 0 then return 'waiting' end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
local max_attempts = tonumber(redis.call('HGET', KEYS[1], 'max_attempts') or '1')
if attempts < max_attempts then
  local delay = math.min(tonumber(ARGV[10]) * 2 ^ (attempts - 1), tonumber(ARGV[11]))
  redis.call('HINCRBY', KEYS[7], 'retried', 1)
  set_status(ARGV[1], st, 'retrying', now)
  redis.call('HSET', KEYS[1], 'status', 'retrying', 'agent', '')
  redis.call('ZADD', KEYS[5], now + delay, ARGV[1])
  emit(KEYS[4], ARGV[5], ARGV[6], ARGV[4], 'task.retrying',
    {task = ARGV[1], agent = ARGV[2], attempt = attempts, delay_ms = delay, error = ARGV[12]})
  return 'retrying'
end
redis.call('HINCRBY', KEYS[7], 'dead_lettered', 1)
set_status(ARGV[1], st, 'failed', now)
local dlq_entry = redis.call('XADD', KEYS[6], '*', 't', ARGV[1], 'error', ARGV[12])
redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_ms', ARGV[4], 'dlq_entry', dlq_entry)
emit(KEYS[4], ARGV[5], ARGV[6], ARGV[4], 'task.failed',
  {task = ARGV[1], agent = ARGV[2], attempts = attempts, error = ARGV[12]})
redis.call('PUBLISH', ARGV[6], 'done:' .. ARGV[1])
return 'failed'
