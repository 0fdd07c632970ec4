-- An agent begins a task it read from its work stream.
-- KEYS: task, agent hash, events, work stream, queues high / normal / low, dlq,
--       the 7 status indexes
-- ARGV: task id, agent id, now, maxlen, channel, incarnation, work entry id
-- Returns {1, task fields...} to run it, or {0, status} to skip (cancelled, done, lost).
-- The task records which incarnation (agent process) of each agent started it
-- (``inc:<agent>``): a restarted agent finding a task its previous incarnation was
-- running never runs it again under that delivery; the task is reclaimed as
-- ``agent-lost`` and retried by its policy (max_attempts), like any lost agent's work.
local st = redis.call('HGET', KEYS[1], 'status')
local inc_field = 'inc:' .. ARGV[2]
if st == 'running' then
  local prev = redis.call('HGET', KEYS[1], inc_field)
  if prev == ARGV[6] and redis.call('HGET', KEYS[1], 'entry:' .. ARGV[2]) == ARGV[7] then
    -- This very start again: the client retried it after its reply was lost (Redis
    -- restarted or stalled mid-call). The first one never reached the agent: run it.
    redis.call('HSET', KEYS[2], 'status', 'busy', 'current_task', ARGV[1])
    return {1, redis.call('HGETALL', KEYS[1])}
  end
  if prev then
    redis.call('XACK', KEYS[4], 'agent', ARGV[7])
    redis.call('XDEL', KEYS[4], ARGV[7])
    if prev == ARGV[6] then
      -- A second entry for a task this very process is running (a re-delivery).
      local load = redis.call('HINCRBY', KEYS[2], 'load', -1)
      if load < 0 then redis.call('HSET', KEYS[2], 'load', 0) end
      return {0, 'duplicate'}
    end
    redis.call('HDEL', KEYS[1], inc_field)
    emit(KEYS[3], ARGV[4], ARGV[5], ARGV[3], 'task.lost',
      {task = ARGV[1], agent = ARGV[2], incarnation = prev})
    local pending = redis.call('HINCRBY', KEYS[1], 'pending_replicas', -1)
    if pending > 0 then return {0, 'replica-running'} end
    local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
    local max_attempts = tonumber(redis.call('HGET', KEYS[1], 'max_attempts') or '1')
    if attempts >= max_attempts then
      local err = 'agent lost while running the last allowed attempt'
      local dlq_entry = redis.call('XADD', KEYS[8], '*', 't', ARGV[1], 'error', err)
      redis.call('HSET', KEYS[1], 'status', 'failed', 'error', err, 'updated_ms', ARGV[3],
        'finished_ms', ARGV[3], 'agent', '', 'dlq_entry', dlq_entry)
      set_status(ARGV[1], 'running', 'failed', ARGV[3])
      emit(KEYS[3], ARGV[4], ARGV[5], ARGV[3], 'task.failed',
        {task = ARGV[1], attempts = attempts, error = err})
      redis.call('PUBLISH', ARGV[5], 'done:' .. ARGV[1])
      return {0, 'failed'}
    end
    local prio = redis.call('HGET', KEYS[1], 'priority')
    local queue = KEYS[6]
    if prio == 'high' then queue = KEYS[5] elseif prio == 'low' then queue = KEYS[7] end
    redis.call('HSET', KEYS[1], 'status', 'queued', 'agent', '', 'updated_ms', ARGV[3],
      'cancel', '', 'enqueued_ms', ARGV[3])
    set_status(ARGV[1], 'running', 'queued', ARGV[3])
    redis.call('XADD', queue, '*', 't', ARGV[1])
    emit(KEYS[3], ARGV[4], ARGV[5], ARGV[3], 'task.requeued',
      {task = ARGV[1], reason = 'agent-lost'})
    redis.call('PUBLISH', ARGV[5], 'queued')
    return {0, 'agent-lost'}
  end
end
if st ~= 'assigned' and st ~= 'running' then
  -- Cancelled (or finished elsewhere) after it was assigned to us: the assignment's
  -- load is given back here, once (XACK counts 1 only the first time), or the agent
  -- stays "full" for good and work pinned to it never comes.
  if redis.call('XACK', KEYS[4], 'agent', ARGV[7]) == 1 then
    redis.call('XDEL', KEYS[4], ARGV[7])
    local load = redis.call('HINCRBY', KEYS[2], 'load', -1)
    if load < 0 then redis.call('HSET', KEYS[2], 'load', 0) end
  end
  return {0, st or 'missing'}
end
if st == 'assigned' then
  local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  set_status(ARGV[1], 'assigned', 'running', ARGV[3])
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_ms', ARGV[3], 'updated_ms', ARGV[3])
  emit(KEYS[3], ARGV[4], ARGV[5], ARGV[3], 'task.started',
    {task = ARGV[1], agent = ARGV[2], attempt = attempt})
end
redis.call('HSET', KEYS[1], inc_field, ARGV[6], 'entry:' .. ARGV[2], ARGV[7])
redis.call('HSET', KEYS[2], 'status', 'busy', 'current_task', ARGV[1])
return {1, redis.call('HGETALL', KEYS[1])}
