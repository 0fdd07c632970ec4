-- Shared by every cfn script (prepended at load time).
-- Events are appended to the swarm's bounded stream and announced on its notify
-- channel in the same script as the state change they describe. ``words``: the other
-- wake-ups of this change (``queued``, ``agent``, ``done:<task>``), in the same PUBLISH
-- (one per script: each costs cfnd a pub/sub message to parse; see queue/notify.py).
local function emit(events_key, maxlen, channel, now, etype, data, words)
  redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*',
    'type', etype, 'ts', now, 'data', cjson.encode(data))
  if words then redis.call('PUBLISH', channel, 'ev ' .. words)
  else redis.call('PUBLISH', channel, 'ev') end
end

-- A queue entry: the task id, with what the dispatcher places it by (type, target,
-- enqueued at) so it need not read the task (an entry with only ``t`` is read).
local function queue_entry(queue, tid, type_target, now)
  local target = type_target[2]
  if target and target ~= '' then
    redis.call('XADD', queue, '*', 't', tid, 'y', type_target[1] or '', 'e', now, 'g', target)
  else
    redis.call('XADD', queue, '*', 't', tid, 'y', type_target[1] or '', 'e', now)
  end
end

-- Task status indexes: the scripts that change a task's status pass the seven index
-- zsets (queued .. cancelled, see keys.TASK_STATUSES) as their LAST seven KEYS. Each
-- index scores a task by when it entered that status, so counts are ZCARDs and
-- retention takes score ranges of the finished ones.
local STATUS_SLOT = {queued = 0, assigned = 1, running = 2, retrying = 3,
  succeeded = 4, failed = 5, cancelled = 6}
local function status_key(status)
  local key = KEYS[#KEYS - 6 + STATUS_SLOT[status]]
  if string.sub(key, -(#status + 4)) ~= ':st:' .. status then
    error('cfn: status indexes must be the last seven KEYS (got ' .. key .. ')')
  end
  return key
end
local function set_status(tid, old, new, now)
  if old == new then return end
  if old and STATUS_SLOT[old] then redis.call('ZREM', status_key(old), tid) end
  redis.call('ZADD', status_key(new), now, tid)
end
