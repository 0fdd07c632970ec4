"""Task queues on Redis Streams: submit, assign, start, complete, retry, cancel, DLQ.

Every state change is one Lua script (see store/lua/), so a task is never half
moved: the queue entry, the task hash, the agent's load and the event are
updated together. Delivery is at-least-once; results are written once per task
id (a second completion of the same task is acknowledged and ignored).

Flow: ``submit`` → queue ``q:{prio}`` → the daemon's dispatcher ``assign``s it to
one or more agents' ``work:{agent}`` streams → the agent ``start``s it, runs it,
``complete``s it (success, retry after backoff, or dead-letter).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from cfn_client.wire.errors import Conflict, InvalidArgs, NotFound
from cfn_client.wire.schema.swarm import Priority, TaskInfo, TaskResult
from cfn_daemon.core import seals
from cfn_daemon.core.placement import PRIORITIES
from cfn_daemon.queue import direct
from cfn_daemon.queue.stored import decode_task, encode_result
from cfn_daemon.queue.task_index import TaskIndex
from cfn_daemon.queue.task_io import TaskIO
from cfn_daemon.store.keys import (
    DISPATCH_GROUP,
    DURATION_BUCKETS_S,
    EVENTS_MAXLEN,
    PERF_KEEP,
    Keys,
)
from cfn_daemon.store.scripts import Scripts

_REPLY_ONLY = frozenset({"clipped", "text_bytes"})  # set on replies (task_views), never stored
_json = msgspec.json.Encoder()


def now_ms() -> int:
    return int(time.time() * 1000)


def new_task_id() -> str:
    """Sortable-ish, short, unique: millisecond time + random suffix."""
    return f"t{now_ms():x}{uuid.uuid4().hex[:6]}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class PreparedSubmit:
    """A checked task and its submit.lua call (``TaskQueue.prepare``)."""

    info: TaskInfo
    keys: list[str]
    args: list[Any]
    idempotency_key: str | None
    same_if_exists: bool = False  # a client-picked id: its retry gets the task back


@dataclass(frozen=True, slots=True)
class Retry:
    """Backoff between attempts: base * 2^(attempt-1), capped."""

    base_s: float = 1.0
    max_s: float = 60.0


class TaskQueue:
    """Task operations for one Redis and key prefix (shared by cfnd and cfn-agent)."""

    def __init__(self, redis: Any, keys: Keys, scripts: Scripts) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = scripts
        self.index = TaskIndex(redis, keys, scripts)
        self.io = TaskIO(redis, keys, scripts, decode_task)

    def _common(self, swarm: str) -> list[Any]:
        return [EVENTS_MAXLEN, self.keys.notify(swarm)]

    # ------------------------------------------------------------------ client side

    async def submit(self, swarm: str, **spec: Any) -> TaskInfo:
        """Enqueue a task (the fields of ``prepare``); returns its record.

        With an ``idempotency_key``, a repeated submit (a client retrying after a
        timeout) returns the task first submitted under that key, for
        ``idempotency_ttl_s``, instead of queuing it again; the check and the submit
        are one script, so two concurrent retries cannot both queue it.
        """
        job = self.prepare(swarm, **spec)
        return await self._submitted(job, await self.scripts.run("submit", job.keys, job.args))

    async def submit_many(self, jobs: list[PreparedSubmit]) -> list[TaskInfo]:
        """Every ``prepare``d submit in one MULTI/EXEC (one round trip, all or none
        recorded: a link lost before EXEC queues nothing); the records in order."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for job in jobs:
                await self.scripts.run("submit", job.keys, job.args, client=pipe)
            replies = await pipe.execute()
        return [await self._submitted(j, r) for j, r in zip(jobs, replies, strict=True)]

    def prepare(
        self,
        swarm: str,
        *,
        text: str,
        type: str,
        priority: Priority = "normal",
        timeout_s: float | None = None,
        max_attempts: int = 3,
        task_id: str | None = None,
        target: str | None = None,
        context: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl_s: float = 86_400.0,
        direct: bool = False,
        same_if_exists: bool = False,
    ) -> PreparedSubmit:
        """Check a task's fields and build its submit.lua call (nothing is sent).

        ``direct``: an untargeted task goes to its type's direct stream, which the
        agents of that type read themselves (queue/direct.py), not past the dispatcher.
        """
        if not text.strip():
            raise InvalidArgs("task text is empty; expected the command or prompt to run")
        if priority not in PRIORITIES:
            raise InvalidArgs(f"priority {priority!r}: expected one of {', '.join(PRIORITIES)}")
        if not 1 <= max_attempts <= 100:
            raise InvalidArgs(f"max_attempts {max_attempts}: expected 1..100")
        if timeout_s is not None and timeout_s <= 0:
            raise InvalidArgs(f"timeout_s {timeout_s}: expected a positive number of seconds")
        tid = task_id or new_task_id()
        ts = now_ms()
        info = TaskInfo(
            id=tid,
            swarm=swarm,
            text=text,
            type=type,
            priority=priority,
            status="queued",
            attempts=0,
            max_attempts=max_attempts,
            created_ms=ts,
            updated_ms=ts,
            timeout_s=timeout_s,
            target=target,
            context=dict(context or {}),
        )
        fields: list[Any] = []
        for key, value in msgspec.structs.asdict(info).items():
            if key in _REPLY_ONLY:
                continue
            if key == "context":
                if value:  # an empty one is not stored (decode_task gives {})
                    fields += [key, _json.encode(value)]
            elif value is not None:
                fields += [key, str(value) if not isinstance(value, str) else value]
        fields += ["enqueued_ms", ts]
        event = _json.encode({"task": tid, "type": type, "priority": priority})
        idem_key = self.keys.idempotency(swarm, idempotency_key) if idempotency_key else None
        ttl_ms = max(1, int(idempotency_ttl_s * 1000)) if idem_key else 0
        to_direct = direct and not target
        keys = [
            self.keys.task(swarm, tid),
            self.keys.tasks(swarm),
            self.keys.direct(swarm, type, priority)
            if to_direct
            else self.keys.queue(swarm, priority),
            self.keys.events(swarm),
            idem_key or self.keys.task(swarm, tid),
            *self.keys.status_indexes(swarm),
        ]
        args = [tid, ts, *self._common(swarm), event, ttl_ms, 1 if to_direct else 0, *fields]
        return PreparedSubmit(info, keys, args, idempotency_key, same_if_exists)

    async def _submitted(self, job: PreparedSubmit, created: Any) -> TaskInfo:
        """The record of a submit.lua reply: the new task, or the one its key names."""
        info = job.info
        if isinstance(created, bytes | str):
            return await self._same_submit(info.swarm, _text(created), info, job.idempotency_key)
        if not created:
            if job.same_if_exists:
                return await self._same_submit(info.swarm, info.id, info, None)
            raise Conflict(f"task {info.id} already exists in swarm {info.swarm}")
        return info

    async def _same_submit(
        self, swarm: str, task_id: str, wanted: TaskInfo, key: str | None
    ) -> TaskInfo:
        """The task a repeated submit stands for (the same task, or an error): by its
        idempotency ``key``, or (None) by the id the client picked."""
        named = f"idempotency key {key!r}" if key else f"task id {task_id!r}"
        try:
            existing = await self.get(swarm, task_id)
        except NotFound:
            raise Conflict(
                f"{named} was used for task {task_id}, which no longer exists "
                "(retention); submit with a new one",
                details={"task": task_id, "idempotency_key": key},
            ) from None
        if (existing.text, existing.type) != (wanted.text, wanted.type):
            raise Conflict(
                f"{named} was already used for task {task_id} with a different text or "
                "type; use a new one for a different task",
                details={"task": task_id, "idempotency_key": key},
            )
        return existing

    async def get(self, swarm: str, task_id: str) -> TaskInfo:
        raw = await self.redis.hgetall(self.keys.task(swarm, task_id))
        if not raw:
            raise NotFound(
                f"no task {task_id!r} in swarm {swarm}; `cfnctl task list` shows the tasks",
                details={"task": task_id, "swarm": swarm},
            )
        return decode_task(raw)

    async def get_many(self, swarm: str, task_ids: list[str]) -> list[TaskInfo]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for tid in task_ids:
                pipe.hgetall(self.keys.task(swarm, tid))
            raws = await pipe.execute()
        return [decode_task(raw) for raw in raws if raw]

    async def statuses(self, swarm: str, task_ids: list[str]) -> dict[str, str | None]:
        """Each task's status (None: no such task), pipelined in batches."""
        out: dict[str, str | None] = {}
        for i in range(0, len(task_ids), 1000):
            batch = task_ids[i : i + 1000]
            async with self.redis.pipeline(transaction=False) as pipe:
                for tid in batch:
                    pipe.hget(self.keys.task(swarm, tid), "status")
                raw = await pipe.execute()
            out |= {
                t: (_text(v) if v is not None else None) for t, v in zip(batch, raw, strict=True)
            }
        return out

    async def recent(
        self, swarm: str, status: str | None = None, limit: int = 100
    ) -> list[TaskInfo]:
        """The newest ``limit`` tasks (of ``status``), from the indexes: no scan."""
        ids, _ = await self.index.page(swarm, status, limit)
        return await self.get_many(swarm, ids)

    async def counts(self, swarm: str) -> dict[str, int]:
        """Tasks by status over the retained history (O(1): the status indexes)."""
        return await self.index.counts(swarm)

    async def queue_depths(self, swarm: str, direct_types: Iterable[str] = ()) -> dict[str, int]:
        """Waiting tasks per priority (the routed queues, and the direct streams of
        ``direct_types`` not yet read), plus those waiting out a retry's backoff."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for prio in PRIORITIES:
                pipe.xlen(self.keys.queue(swarm, prio))
            pipe.zcard(self.keys.delayed(swarm))
            lens = await pipe.execute()
        unread = await direct.depths(self.redis, self.keys, swarm, direct_types)
        out = {p: n + unread[p] for p, n in zip(PRIORITIES, lens[:3], strict=True)}
        return {**out, "retrying": lens[3]}

    async def cancel(self, swarm: str, task_id: str) -> TaskInfo:
        """Cancel a queued or running task (a running one is stopped by its agent)."""
        outcome = _text(
            await self.scripts.run(
                "cancel",
                [
                    self.keys.task(swarm, task_id),
                    self.keys.events(swarm),
                    self.keys.delayed(swarm),
                    *self.keys.status_indexes(swarm),
                ],
                [task_id, now_ms(), *self._common(swarm)],
            )
        )
        if outcome == "missing":
            await self.get(swarm, task_id)  # raises NotFound
        return await self.get(swarm, task_id)

    async def requeue(
        self,
        swarm: str,
        task_id: str,
        *,
        reason: str,
        allowed: tuple[str, ...],
        reset_attempts: bool = False,
        priority: str | None = None,
    ) -> str:
        """Run requeue.lua; returns the outcome: ``queued``, ``failed`` (a lost agent's
        last attempt), ``replica-running`` or ``missing``. A task whose status is not in
        ``allowed`` raises Conflict (details: its ``status``) and is left as it is."""
        if priority is None:
            prio = await self.redis.hget(self.keys.task(swarm, task_id), "priority")
            priority = _text(prio) if prio else "normal"
        try:
            reply = await self.scripts.run(
                "requeue",
                [
                    self.keys.task(swarm, task_id),
                    self.keys.queue(swarm, priority),
                    self.keys.events(swarm),
                    self.keys.delayed(swarm),
                    self.keys.dlq(swarm),
                    *self.keys.status_indexes(swarm),
                ],
                [
                    task_id,
                    now_ms(),
                    *self._common(swarm),
                    reason,
                    ",".join(allowed),
                    1 if reset_attempts else 0,
                ],
            )
        except ResponseError as exc:
            message = str(exc)
            if not message.startswith("NOTALLOWED "):
                raise
            status = message.split(" ", 1)[1]
            raise Conflict(
                f"task {task_id} is {status}; expected one of {', '.join(allowed)}",
                details={"task": task_id, "status": status, "allowed": list(allowed)},
            ) from None
        return _text(reply)

    async def retry(self, swarm: str, task_id: str) -> TaskInfo:
        """Run a finished (failed or cancelled) task again from attempt 1; its
        dead-letter entry is dropped by the same script."""
        task = await self.get(swarm, task_id)
        try:
            await self.requeue(
                swarm,
                task_id,
                reason="manual-retry",
                allowed=("failed", "cancelled"),
                reset_attempts=True,
                priority=task.priority,
            )
        except Conflict as exc:
            status = exc.details.get("status")
            raise Conflict(
                f"task {task_id} is {status}; only failed or cancelled tasks can be retried",
                details={"status": status},
            ) from None
        return await self.get(swarm, task_id)

    async def promote_due(self, swarm: str) -> int:
        """Requeue retries whose backoff has run out; returns how many."""
        due = await self.redis.zrangebyscore(self.keys.delayed(swarm), "-inf", now_ms())
        moved = 0
        for raw in due:
            tid = _text(raw)
            try:
                outcome = await self.requeue(swarm, tid, reason="retry", allowed=("retrying",))
            except Conflict:
                outcome = "moved-on"  # cancelled (or retried by hand) meanwhile
            if outcome == "queued":
                moved += 1
            else:
                await self.redis.zrem(self.keys.delayed(swarm), tid)
        return moved

    async def next_due_ms(self, swarm: str) -> int | None:
        first = await self.redis.zrange(self.keys.delayed(swarm), 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def clean(self, swarm: str, older_than_s: float) -> int:
        """Delete finished tasks that finished more than ``older_than_s`` ago (by index
        ranges, each task re-checked in the deleting script); returns how many."""
        return await self.index.expire(swarm, now_ms() - int(older_than_s * 1000))

    async def dlq_list(self, swarm: str, limit: int = 100) -> list[TaskInfo]:
        """The newest dead-lettered tasks that are still failed (one entry per task)."""
        entries = await self.redis.xrevrange(self.keys.dlq(swarm), count=limit)
        ids = list(dict.fromkeys(_text(fields[b"t"]) for _, fields in entries))
        return [t for t in await self.get_many(swarm, ids) if t.status == "failed"]

    async def dlq_requeue(self, swarm: str, task_id: str | None) -> int:
        """Requeue one dead-lettered task, or all of them; returns how many.

        Each requeue drops the task's dead-letter entry in the same script; all of them
        go a page of the DLQ stream at a time, never reading it whole."""
        if task_id is not None:
            task = await self.get(swarm, task_id)
            if task.status != "failed":
                raise NotFound(f"task {task_id!r} is not in the dead-letter queue of {swarm}")
            await self._requeue_dead(swarm, task)
            return 1
        done = 0
        after = "-"
        for _ in range(100_000):  # bounded: a page of the stream per round
            entries = await self.redis.xrange(self.keys.dlq(swarm), min=after, count=500)
            if not entries:
                break
            after = "(" + _text(entries[-1][0])
            ids = list(dict.fromkeys(_text(fields[b"t"]) for _, fields in entries))
            gone = set(ids)  # entries no failed task needs any more
            for task in await self.get_many(swarm, ids):
                if task.status == "failed" and not await self._requeue_dead(swarm, task):
                    gone.discard(task.id)
                elif task.status == "failed":
                    done += 1
            # Entries of requeued or deleted tasks (an older cfnd kept no entry id).
            stale = [eid for eid, f in entries if _text(f[b"t"]) in gone]
            if stale:
                await self.redis.xdel(self.keys.dlq(swarm), *stale)
        return done

    async def _requeue_dead(self, swarm: str, task: TaskInfo) -> bool:
        try:
            outcome = await self.requeue(
                swarm,
                task.id,
                reason="dlq-requeue",
                allowed=("failed",),
                reset_attempts=True,
                priority=task.priority,
            )
        except Conflict:
            return False  # retried by someone else meanwhile
        return outcome == "queued"

    async def trim_dlq(self, swarm: str, max_entries: int, max_age_s: float) -> None:
        """Dead-letter retention: at most ``max_entries``, none older than ``max_age_s``."""
        min_id = f"{max(0, now_ms() - int(max_age_s * 1000))}-0"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xtrim(self.keys.dlq(swarm), maxlen=max_entries, approximate=True)
            pipe.xtrim(self.keys.dlq(swarm), minid=min_id, approximate=True)
            await pipe.execute()

    # ------------------------------------------------------------------ dispatcher side

    async def assign_many(
        self, swarm: str, placements: list[tuple[str, str, str, list[str], str]]
    ) -> list[int]:
        """Move queue entries to agents' work streams, all in one round trip.

        Each placement is (task id, queue entry id, priority, agent ids, via). Per
        placement: 1 assigned; 0 the task was not queued any more (its entry is just
        acknowledged); -1 one of the agents is gone (the entry stays pending).
        """
        if not placements:
            return []
        calls = []
        for task_id, entry_id, priority, agents, via in placements:
            keys = [
                self.keys.task(swarm, task_id),
                self.keys.queue(swarm, priority),
                self.keys.events(swarm),
            ]
            for agent in agents:
                keys += [self.keys.agent(swarm, agent), self.keys.work(swarm, agent)]
            keys += self.keys.status_indexes(swarm)
            args = [task_id, entry_id, now_ms(), *self._common(swarm), DISPATCH_GROUP, via]
            calls.append((keys, [*args, *agents]))
        if len(calls) == 1:
            # The usual pass places one task: a plain EVALSHA, not a pipeline (which
            # sends SCRIPT EXISTS for its scripts on every execute).
            return [int(await self.scripts.run("assign", *calls[0]))]
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await self.scripts.run("assign", keys, args, client=pipe)
            return [int(r) for r in await pipe.execute()]

    async def reclaim_agent(self, swarm: str, agent: str) -> list[str]:
        """Give back everything in a lost agent's work stream, and the entries it had
        read from its type's direct streams; returns requeued task ids."""
        work = self.keys.work(swarm, agent)
        entries = await self.redis.xrange(work)
        requeued = []
        for _, fields in entries:
            tid = _text(fields[b"t"])
            if await self._requeue_lost(swarm, tid, ("assigned", "running")):
                requeued.append(tid)
        await self.redis.delete(work)
        agent_type = await self.redis.hget(self.keys.agent(swarm, agent), "type")
        if agent_type:
            requeued += await direct.reclaim(
                self.redis,
                self.keys,
                swarm,
                agent,
                _text(agent_type),
                lambda tid: self._requeue_lost(swarm, tid, ("running",)),
            )
        return requeued

    async def _requeue_lost(self, swarm: str, tid: str, allowed: tuple[str, ...]) -> bool:
        try:
            outcome = await self.requeue(swarm, tid, reason="agent-lost", allowed=allowed)
        except Conflict:
            return False  # finished or cancelled meanwhile: nothing to give back
        return outcome == "queued"

    # ------------------------------------------------------------------ agent side

    async def start(
        self,
        swarm: str,
        task_id: str,
        agent: str,
        *,
        incarnation: str,
        entry_id: str,
        stream: str | None = None,
    ) -> TaskInfo | str:
        """Mark the task running (attempt + 1) by this agent ``incarnation`` (process).

        Returns the task to run, or why it must be skipped (its status, ``duplicate``,
        or ``agent-lost``: an earlier incarnation of this agent started it, so it is
        requeued or failed by its retry policy instead of being run again here). On
        ``duplicate`` and ``agent-lost`` the work entry is already acknowledged.
        ``stream``: where the entry was read, when not the agent's work stream (a
        direct stream: the task starts from queued).
        """
        work = self.keys.work(swarm, agent)
        reply = await self.scripts.run(
            "start",
            [
                self.keys.task(swarm, task_id),
                self.keys.agent(swarm, agent),
                self.keys.events(swarm),
                stream or work,
                *(self.keys.queue(swarm, p) for p in PRIORITIES),
                self.keys.dlq(swarm),
                *self.keys.status_indexes(swarm),
            ],
            [
                task_id, agent, now_ms(), *self._common(swarm), incarnation, entry_id,
                1 if stream not in (None, work) else 0,
            ],
        )  # fmt: skip
        if int(reply[0]) != 1:
            return _text(reply[1])
        flat = reply[1]
        return decode_task(dict(zip(flat[::2], flat[1::2], strict=True)))

    async def complete(
        self,
        swarm: str,
        task_id: str,
        agent: str,
        entry_id: str,
        result: TaskResult,
        retry: Retry,
        seal: Callable[[bytes], str] | None = None,
        stream: str | None = None,
    ) -> str:
        """Store the result (once), ack, and decide succeeded / retrying / failed.

        ``stream``: where the entry was read, when not the agent's work stream.

        ``seal`` signs the stored result's exact bytes (``core.seals``); the signature
        is stored with it by the same script call.
        """
        payload = encode_result(result)
        return _text(
            await self.scripts.run(
                "complete",
                [
                    self.keys.task(swarm, task_id),
                    stream or self.keys.work(swarm, agent),
                    self.keys.agent(swarm, agent),
                    self.keys.events(swarm),
                    self.keys.delayed(swarm),
                    self.keys.dlq(swarm),
                    self.keys.stats(swarm),
                    self.keys.perf(swarm, agent),
                    *self.keys.status_indexes(swarm),
                ],
                [
                    task_id,
                    agent,
                    entry_id,
                    now_ms(),
                    *self._common(swarm),
                    1 if result.ok else 0,
                    payload,
                    result.duration_ms,
                    int(retry.base_s * 1000),
                    int(retry.max_s * 1000),
                    result.error or "",
                    PERF_KEEP,
                    seals.pack(seal(payload)) if seal is not None else b"",
                    *(int(b * 1000) for b in DURATION_BUCKETS_S),
                ],
            )
        )
