-- An agent begins a task it read from its work stream, or from its type's direct
-- stream (ARGV[8] = '1'): a direct task goes from queued to running here, taking a
-- place of the agent's load (a routed one took it when it was assigned).
-- KEYS: task, agent hash, events, the stream the entry is in, queues high / normal /
--       low, dlq, the 7 status indexes
-- ARGV: task id, agent id, now, maxlen, channel, incarnation, entry id, direct (1/0)
-- Returns {1, task fields...} to run it, or {0, status} to skip (cancelled, done, lost).
-- The task records which incarnation (agent process) of each agent started it
-- (``inc:<agent>``): a restarted agent finding a task its previous incarnation was
-- running never runs it again under that delivery; the task is reclaimed as
-- ``agent-lost`` and retried by its policy (max_attempts), like any lost agent's work.
-- The task is read whole once (it is returned to run it) and written once.
local flat = redis.call('HGETALL', KEYS[1])
local task = {}
for i = 1, #flat, 2 do task[flat[i]] = flat[i + 1] end
local st = task.status
local direct = ARGV[8] == '1'
local inc_field = 'inc:' .. ARGV[2]
local entry_field = 'entry:' .. ARGV[2]
if st == 'running' then
  local prev = task[inc_field]
  if prev == ARGV[6] and task[entry_field] == ARGV[7] then
    -- This very start again: the client retried it after its reply was lost (Redis
    -- restarted or stalled mid-call). The first one never reached the agent: run it.
    redis.call('HSET', KEYS[2], 'status', 'busy', 'current_task', ARGV[1])
    return {1, flat}
  end
  if prev then
    redis.call('XACK', KEYS[4], 'agent', ARGV[7])
    redis.call('XDEL', KEYS[4], ARGV[7])
    if prev == ARGV[6] then
      -- A second entry for a task this very process is running (a re-delivery); a
      -- direct entry took no place of the load.
      if not direct then
        local load = redis.call('HINCRBY', KEYS[2], 'load', -1)
        if load < 0 then redis.call('HSET', KEYS[2], 'load', 0) end
        redis.call('PUBLISH', ARGV[5], 'agent')  -- its capacity changed
      end
      return {0, 'duplicate'}
    end
    redis.call('HDEL', KEYS[1], inc_field)
    emit(KEYS[3], ARGV[4], ARGV[5], ARGV[3], 'task.lost',
      {task = ARGV[1], agent = ARGV[2], incarnation = prev})
    local pending = redis.call('HINCRBY', KEYS[1], 'pending_replicas', -1)
    if pending > 0 then return {0, 'replica-running'} end
    local attempts = tonumber(task.attempts or '0')
    local max_attempts = tonumber(task.max_attempts or '1')
    if attempts >= max_attempts then
      local err = 'agent lost while running the last allowed attempt'
      local dlq_entry = redis.call('XADD', KEYS[8], '*', 't', ARGV[1], 'error', err)
      redis.call('HSET', KEYS[1], 'status', 'failed', 'error', err, 'updated_ms', ARGV[3],
        'finished_ms', ARGV[3], 'agent', '', 'dlq_entry', dlq_entry)
      set_status(ARGV[1], 'running', 'failed', ARGV[3])
      emit(KEYS[3], ARGV[4], ARGV[5], ARGV[3], 'task.failed',
        {task = ARGV[1], attempts = attempts, error = err}, 'done:' .. ARGV[1])
      return {0, 'failed'}
    end
    local prio = task.priority
    local queue = KEYS[6]
    if prio == 'high' then queue = KEYS[5] elseif prio == 'low' then queue = KEYS[7] end
    redis.call('HSET', KEYS[1], 'status', 'queued', 'agent', '', 'updated_ms', ARGV[3],
      'cancel', '', 'enqueued_ms', ARGV[3])
    set_status(ARGV[1], 'running', 'queued', ARGV[3])
    queue_entry(queue, ARGV[1], {task.type, task.target}, ARGV[3])
    emit(KEYS[3], ARGV[4], ARGV[5], ARGV[3], 'task.requeued',
      {task = ARGV[1], reason = 'agent-lost'}, 'queued')
    return {0, 'agent-lost'}
  end
end
if direct and st ~= 'queued' then
  -- Cancelled, finished, or being run elsewhere (a stale direct entry): it took no
  -- place of our load, so only the entry goes.
  redis.call('XACK', KEYS[4], 'agent', ARGV[7])
  redis.call('XDEL', KEYS[4], ARGV[7])
  return {0, st or 'missing'}
end
if not direct and st ~= 'assigned' and st ~= 'running' then
  -- Cancelled (or finished elsewhere) after it was assigned to us: the assignment's
  -- load is given back here, once (XACK counts 1 only the first time), or the agent
  -- stays "full" for good and work pinned to it never comes.
  if redis.call('XACK', KEYS[4], 'agent', ARGV[7]) == 1 then
    redis.call('XDEL', KEYS[4], ARGV[7])
    local load = redis.call('HINCRBY', KEYS[2], 'load', -1)
    if load < 0 then redis.call('HSET', KEYS[2], 'load', 0) end
    redis.call('PUBLISH', ARGV[5], 'agent')  -- its capacity changed
  end
  return {0, st or 'missing'}
end
local changes = {inc_field, ARGV[6], entry_field, ARGV[7]}
if st == 'assigned' or st == 'queued' then
  local attempt = tonumber(task.attempts or '0') + 1
  set_status(ARGV[1], st, 'running', ARGV[3])
  for _, v in ipairs({'status', 'running', 'started_ms', ARGV[3], 'updated_ms', ARGV[3],
      'attempts', tostring(attempt)}) do
    changes[#changes + 1] = v
  end
  if st == 'queued' then
    changes[#changes + 1] = 'agent'; changes[#changes + 1] = ARGV[2]
    redis.call('HINCRBY', KEYS[2], 'load', 1)
  end
  emit(KEYS[3], ARGV[4], ARGV[5], ARGV[3], 'task.started',
    {task = ARGV[1], agent = ARGV[2], attempt = attempt})
end
redis.call('HSET', KEYS[1], unpack(changes))
redis.call('HSET', KEYS[2], 'status', 'busy', 'current_task', ARGV[1])
-- The task as now stored (its fields in the order read, then the new ones).
for i = 1, #changes, 2 do
  local name = changes[i]
  if task[name] == nil then flat[#flat + 1] = name; flat[#flat + 1] = changes[i + 1]
  else task[name] = changes[i + 1] end
end
for i = 1, #flat, 2 do
  if task[flat[i]] ~= nil then flat[i + 1] = task[flat[i]] end
end
return {1, flat}
