"""Task, dead-letter and event ops."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from cfn_client.wire.errors import CfnError, InvalidArgs, NotFound, RequestTimeout
from cfn_client.wire.schema.swarm import (
    MAX_SUBMIT_MANY,
    TERMINAL_TASK_STATUSES,
    CountResult,
    DlqListArgs,
    DlqRequeueArgs,
    Event,
    EventsArgs,
    EventsResult,
    SwarmInfo,
    TaskChunk,
    TaskCleanArgs,
    TaskInfo,
    TaskListArgs,
    TaskListResult,
    TaskReadArgs,
    TaskRefArgs,
    TaskSpec,
    TaskSubmitArgs,
    TaskSubmitManyArgs,
    TaskSubmitManyResult,
    TaskUploadArgs,
    TaskUploadResult,
    TaskWaitArgs,
)
from cfn_daemon.agent import types as agent_types
from cfn_daemon.api.router import (
    Handler,
    RequestContext,
    Router,
    require_exec,
    require_pool,
)
from cfn_daemon.core.placement import LIVE_STATUSES
from cfn_daemon.core.task_views import JSON_WORST_GROWTH, byte_range, fitted, page_within
from cfn_daemon.queue import events
from cfn_daemon.queue.task_index import encode_cursor
from cfn_daemon.settings.schema import Config
from cfn_daemon.swarm.service import SwarmService
from cfn_daemon.util.aio import until_stopped

_json = msgspec.json.Encoder()
WAIT_RECHECK_S = 5.0
MAX_PAGE = 1000  # tasks per list page
MAX_WAIT_IDS = 100_000
WAIT_SHOWN_FAILURES = 50  # `task wait --all` lists at most this many failed / cancelled
LIVE_SEEN_S = 1.0  # a live agent of a type seen this recently needs no new look


@dataclass
class TaskOps:
    service: SwarmService
    stop: asyncio.Event  # the daemon's stop event: ends follow streams
    # (swarm, agent type) → when a live agent of it was last seen (monotonic s): with
    # direct dispatch the dispatcher makes no passes, so its live_types go stale.
    _live_seen: dict[tuple[str, str], float] = field(default_factory=dict)

    def register(self, router: Router) -> None:
        handlers: dict[str, Handler[Any, Any]] = {
            "task.submit": self.submit,
            "task.submit_many": self.submit_many,
            "task.list": self.list_tasks,
            "task.status": self.status,
            "task.cancel": self.cancel,
            "task.retry": self.retry,
            "task.wait": self.wait,
            "task.clean": self.clean,
            "task.upload": self.upload,
            "task.read": self.read,
            "dlq.list": self.dlq_list,
            "dlq.requeue": self.dlq_requeue,
            "events.list": self.events_list,
        }
        for op, handler in handlers.items():
            router.add(op, handler)
        router.add_stream("events.follow", self.events_follow)

    async def submit(self, ctx: RequestContext, args: TaskSubmitArgs) -> TaskInfo:
        swarm, info = await self._active(args.swarm)
        agent_type = self._allowed_type(ctx, args.type)
        text = args.text
        if args.upload is not None:
            if text:
                raise InvalidArgs("give the task's text or an upload id, not both")
            text = await self.service.tasks.io.take_upload(swarm, args.upload)
        fields = self._fields(args, agent_type, text, info)
        if args.task_id is not None:
            fields |= {"task_id": args.task_id, "same_if_exists": True}
        task = await self.service.tasks.submit(swarm, **fields)
        if args.upload is not None:
            await self.service.tasks.io.drop_upload(swarm, args.upload)
        await self._ensure_worker(swarm, agent_type, info.max_agents)
        return fitted(task, self._budget())

    async def submit_many(
        self, ctx: RequestContext, args: TaskSubmitManyArgs
    ) -> TaskSubmitManyResult:
        """Up to MAX_SUBMIT_MANY tasks: every one checked as ``task.submit`` checks it
        (type, pools, exec right, text size) before any is queued, then all queued in
        one MULTI/EXEC. A refused item refuses the call, naming its index."""
        count = len(args.tasks)
        if not 1 <= count <= MAX_SUBMIT_MANY:
            raise InvalidArgs(
                f"{count} tasks: expected 1..{MAX_SUBMIT_MANY} per task.submit_many "
                "(send more in several calls)",
                details={"count": count, "max_tasks": MAX_SUBMIT_MANY},
            )
        swarm, info = await self._active(args.swarm)
        queue = self.service.tasks
        jobs, types = [], set()
        for i, spec in enumerate(args.tasks):
            try:
                agent_type = self._allowed_type(ctx, spec.type)
                jobs.append(queue.prepare(swarm, **self._fields(spec, agent_type, spec.text, info)))
            except CfnError as err:
                raise type(err)(
                    f"tasks[{i}]: {err.message}; none of the {count} tasks was queued",
                    details={**err.details, "index": i},
                    code=err.instance_code,
                ) from None
            types.add(agent_type)
        tasks = await queue.submit_many(jobs)
        for agent_type in sorted(types):
            await self._ensure_worker(swarm, agent_type, info.max_agents)
        return TaskSubmitManyResult(swarm=swarm, ids=[t.id for t in tasks])

    async def _active(self, name: str | None) -> tuple[str, SwarmInfo]:
        """The swarm's id and record; an error unless it takes new tasks."""
        swarm = await self.service.resolve(name)
        # The running swarm's record is in memory: no Redis reads on this hot path.
        rt = self.service.runtimes.get(swarm)
        info = rt.info if rt is not None else await self.service.info(swarm)
        if info.status != "active":
            raise InvalidArgs(f"swarm {swarm} is {info.status}; it takes no new tasks")
        return swarm, info

    def _allowed_type(self, ctx: RequestContext, agent_type: str | None) -> str:
        """The task's agent type (None: the default one, which must be runnable here),
        if the caller may submit to it (its pools; the exec right for text run as code)."""
        cfg = self.service.config()
        if agent_type is None:
            # No type given (`cfnctl run "TEXT"`): the configured default, and if its
            # program is missing here, say so now with the install hint, not after
            # every retry of the task.
            agent_type = agent_types.default_type(cfg.swarm.default_type, cfg.agent_types)
            spec = agent_types.resolve(agent_type, cfg.agent_types)
            problem = agent_types.binary_problem(spec)
            if problem:
                raise InvalidArgs(
                    f"a task without a type goes to the default agent type (swarm."
                    f"default_type), {agent_type!r}, which cannot run here: {problem}. "
                    "Or give a type: --type TYPE (--type shell runs the text as a "
                    "shell command)",
                    details={"type": agent_type, "fix": problem},
                )
        require_pool(ctx, agent_type)
        # Unknown type: a clear error now. Text run as code needs the exec right.
        if agent_types.runs_text_as_code(agent_type, cfg.agent_types):
            require_exec(ctx, f"agent type {agent_type} runs the task text as code")
        return agent_type

    def _fields(
        self, args: TaskSubmitArgs | TaskSpec, agent_type: str, text: str, info: SwarmInfo
    ) -> dict[str, Any]:
        """``TaskQueue.prepare``'s fields of a submit, the config's defaults filled in;
        a text over ``tasks.max_text_bytes`` is refused."""
        cfg = self.service.config()
        if len(text) > cfg.tasks.max_text_bytes or len(text.encode()) > cfg.tasks.max_text_bytes:
            raise InvalidArgs(
                f"task text of {len(text.encode())} bytes is over tasks.max_text_bytes "
                f"({cfg.tasks.max_text_bytes})",
                details={"max_text_bytes": cfg.tasks.max_text_bytes},
            )
        return {
            "text": text,
            "type": agent_type,
            "priority": args.priority,
            "timeout_s": args.timeout_s or (cfg.tasks.default_timeout_s or None),
            # 0 is refused (1..100), not taken for "the default": omit it for that.
            "max_attempts": (
                args.max_attempts if args.max_attempts is not None else cfg.tasks.max_attempts
            ),
            "idempotency_key": args.idempotency_key,
            "idempotency_ttl_s": cfg.tasks.idempotency_ttl_s,
            "direct": self._direct(info, agent_type, cfg),
        }

    def _budget(self) -> int:
        """Bytes a reply may use: half the frame cap leaves room for the envelope and
        for JSON, which is larger than msgpack."""
        return self.service.config().daemon.max_frame_bytes // 2

    async def upload(self, ctx: RequestContext, args: TaskUploadArgs) -> TaskUploadResult:
        """One chunk of a task text too large for one frame (then ``task.submit upload=``)."""
        swarm = await self.service.resolve(args.swarm)
        limit = self.service.config().tasks.max_text_bytes
        uid, size = await self.service.tasks.io.upload(swarm, args.upload, args.data, limit)
        return TaskUploadResult(upload=uid, bytes=size)

    async def read(self, ctx: RequestContext, args: TaskReadArgs) -> TaskChunk:
        """A byte range of a task's text, output or stderr (sized to fit a frame)."""
        swarm = await self.service.resolve(args.swarm)
        if args.offset < 0 or args.limit_bytes < 1:
            raise InvalidArgs(
                f"offset {args.offset}, limit_bytes {args.limit_bytes}: expected offset >= 0 "
                "and limit_bytes >= 1"
            )
        value = await self.service.tasks.io.field(swarm, args.task, args.field)
        room = self._budget() - 1024  # the chunk's envelope
        limit = min(args.limit_bytes, room)
        data, next_offset, total = byte_range(value, args.offset, limit)
        # JSON escapes control characters (up to six bytes for one): shrink until the
        # chunk fits whatever framing the caller speaks.
        while len(_json.encode(data)) > room and limit > room // JSON_WORST_GROWTH:
            limit //= 2
            data, next_offset, total = byte_range(value, args.offset, limit)
        if args.offset > total:
            raise InvalidArgs(
                f"offset {args.offset} is past the end of the task's {args.field} ({total} bytes)",
                details={"total_bytes": total},
            )
        return TaskChunk(
            task=args.task, field=args.field, offset=min(args.offset, total), data=data,
            next_offset=next_offset, total_bytes=total, eof=next_offset >= total,
        )  # fmt: skip

    def _direct(self, info: SwarmInfo, agent_type: str, cfg: Config) -> bool:
        """Whether this untargeted task may skip the dispatcher (queue/direct.py): only
        where the dispatcher would not route, replicate or hold it back anyway."""
        if cfg.tasks.dispatch != "direct" or info.topology != "mesh":
            return False
        if info.strategy != "balanced":
            return False
        rt = self.service.runtimes.get(info.id)
        if rt is None:
            return False
        return not (cfg.agents.max_llm_processes and rt.dispatcher.llm.is_llm(agent_type, cfg))

    async def _ensure_worker(self, swarm: str, agent_type: str, max_agents: int) -> None:
        """Out of the box: with no agent of the task's type, start one (room permitting)."""
        rt = self.service.runtimes.get(swarm)
        if rt is not None and agent_type in rt.dispatcher.live_types:
            return  # the dispatcher saw a live agent of this type on its last pass
        now = time.monotonic()
        if now - self._live_seen.get((swarm, agent_type), -LIVE_SEEN_S) < LIVE_SEEN_S:
            return
        agents = [a for a in await self.service.registry.all(swarm) if a.status in LIVE_STATUSES]
        if any(a.type == agent_type for a in agents):
            if len(self._live_seen) > 10_000:  # bounded: types x swarms, in practice few
                self._live_seen.clear()
            self._live_seen[(swarm, agent_type)] = now
            return
        if len(agents) >= max_agents:
            return
        rt = await self.service.runtime(swarm)
        await rt.supervisor.ensure_one(agent_type)  # re-checked under the spawn lock

    async def list_tasks(self, ctx: RequestContext, args: TaskListArgs) -> TaskListResult:
        """A page of task summaries, newest first; ``next_cursor`` continues it."""
        swarm = await self.service.resolve(args.swarm)
        if not 1 <= args.limit <= MAX_PAGE:
            raise InvalidArgs(f"limit {args.limit}: expected 1..{MAX_PAGE} (page with cursor)")
        queue = self.service.tasks
        pairs, more = await queue.index.page_scored(swarm, args.status, args.limit, args.cursor)
        shown, left = await self._fit(swarm, [t for t, _ in pairs])
        scores = dict(pairs)
        cursor = None
        if shown and (more or left):
            cursor = encode_cursor(scores[shown[-1].id], shown[-1].id)
        return TaskListResult(tasks=shown, next_cursor=cursor)

    async def status(self, ctx: RequestContext, args: TaskRefArgs) -> TaskInfo:
        """The task whole if it fits a reply, else clipped (``clipped``; see task.read)."""
        task = await self.service.tasks.get(await self.service.resolve(args.swarm), args.task)
        return fitted(task, self._budget())

    async def cancel(self, ctx: RequestContext, args: TaskRefArgs) -> TaskInfo:
        swarm = await self.service.resolve(args.swarm)
        return fitted(await self.service.tasks.cancel(swarm, args.task), self._budget())

    async def retry(self, ctx: RequestContext, args: TaskRefArgs) -> TaskInfo:
        swarm = await self.service.resolve(args.swarm)
        return fitted(await self.service.tasks.retry(swarm, args.task), self._budget())

    async def wait(self, ctx: RequestContext, args: TaskWaitArgs) -> TaskListResult:
        """Block until every named task (or, with ``all``, every unfinished task of the
        swarm) is finished. Reads statuses only while waiting (one HGET per task still
        unfinished, pipelined); the reply carries summaries that fit in a frame and
        ``counts`` of all of them."""
        swarm = await self.service.resolve(args.swarm)
        if not args.tasks and not args.all:
            raise InvalidArgs("name the tasks to wait for, or set all=true")
        if args.all:
            return await self._wait_all(swarm, args.timeout_s)
        ids = list(dict.fromkeys(args.tasks))
        if len(ids) > MAX_WAIT_IDS:
            raise InvalidArgs(f"{len(ids)} task ids: expected at most {MAX_WAIT_IDS} per wait")
        queue = self.service.tasks
        statuses = await queue.statuses(swarm, ids)
        unknown = [t for t in ids if statuses[t] is None]
        if unknown:  # unknown ids fail now, not after the wait
            raise NotFound(
                f"no task {unknown[0]!r} in swarm {swarm}; `cfnctl task list` shows the tasks",
                details={"task": unknown[0], "swarm": swarm, "unknown": unknown[:100]},
            )
        pending = [t for t in ids if statuses[t] not in TERMINAL_TASK_STATUSES]
        pulse = self.service.hub.pulses(swarm).done
        loop = asyncio.get_running_loop()
        deadline = None if args.timeout_s is None else loop.time() + args.timeout_s
        while pending:
            waiter = pulse.current()
            now = await queue.statuses(swarm, pending)
            statuses |= now
            pending = [t for t in pending if now[t] not in TERMINAL_TASK_STATUSES]
            if not pending:
                break
            remaining = WAIT_RECHECK_S if deadline is None else deadline - loop.time()
            if remaining <= 0:
                raise RequestTimeout(
                    f"{len(pending)} task(s) still unfinished after {args.timeout_s} s: "
                    f"{', '.join(pending[:10])}",
                    details={"pending": pending[:100], "pending_count": len(pending)},
                )
            await until_stopped(
                asyncio.wait_for(waiter.wait(), min(remaining, WAIT_RECHECK_S)), self.stop
            )
            if self.stop.is_set():
                raise RequestTimeout("cfnd is shutting down; wait again when it is back")
        counts: dict[str, int] = {}
        for tid in ids:
            st = statuses[tid] or "missing"  # deleted meanwhile (task clean)
            counts[st] = counts.get(st, 0) + 1
        # The ones that did not succeed first: if not all fit, those matter most.
        order = sorted(ids, key=lambda t: statuses[t] == "succeeded")
        if len(ids) <= MAX_PAGE:
            order = ids
        tasks, omitted = await self._fit(swarm, order)
        return TaskListResult(tasks=tasks, counts=counts, omitted=omitted)

    async def _fit(self, swarm: str, ids: list[str]) -> tuple[list[TaskInfo], int]:
        """Summaries of ``ids`` in order until the reply budget is used; the rest is
        counted (and not read)."""
        budget = self._budget()
        out: list[TaskInfo] = []
        step = 16  # small first reads: a page of big records fills up fast
        i = 0
        while i < len(ids):
            batch = ids[i : i + step]
            chunk, left = page_within(await self.service.tasks.io.summaries(swarm, batch), budget)
            out += chunk
            budget -= sum(len(_json.encode(t)) + 1 for t in chunk)
            i += len(batch)
            if left or budget <= 0:
                # Tasks read but deleted meanwhile are neither shown nor omitted.
                return out, len(ids) - i + left
            step = min(step * 2, 200)
        return out, 0

    async def _wait_all(self, swarm: str, timeout_s: float | None) -> TaskListResult:
        """Until the swarm has no unfinished task (new ones count too, like ``pueue
        wait``): O(1) checks of the status indexes. Reports what finished meanwhile."""
        index = self.service.tasks.index
        started_ms = int(time.time() * 1000)
        pulses = self.service.hub.pulses(swarm)
        pulse = pulses.done
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        unfinished, counted, rechecked = 0, -1, 0.0
        while True:
            waiter = pulse.current()
            # Counted again only once as many tasks were announced finished as were
            # unfinished (new ones count too, so it may take several rounds), or after
            # WAIT_RECHECK_S: not once per finished task (a round trip each).
            if pulses.done_count - counted >= unfinished or (
                loop.time() - rechecked >= WAIT_RECHECK_S
            ):
                counted, rechecked = pulses.done_count, loop.time()
                unfinished = await index.unfinished(swarm)
                if not unfinished:
                    break
            remaining = WAIT_RECHECK_S if deadline is None else deadline - loop.time()
            if remaining <= 0:
                pending: list[str] = []
                async with contextlib.aclosing(index.live_ids(swarm)) as live:
                    async for tid in live:
                        pending.append(tid)
                        if len(pending) >= 100:
                            break
                raise RequestTimeout(
                    f"{unfinished} task(s) still unfinished after {timeout_s} s: "
                    f"{', '.join(pending[:10])}",
                    details={"pending": pending, "pending_count": unfinished},
                )
            recheck_in = max(0.0, WAIT_RECHECK_S - (loop.time() - rechecked))
            await until_stopped(
                asyncio.wait_for(waiter.wait(), min(remaining, recheck_in)), self.stop
            )
            if self.stop.is_set():
                raise RequestTimeout("cfnd is shutting down; wait again when it is back")
        counts = {k: v for k, v in (await index.finished_since(swarm, started_ms)).items() if v}
        bad = [
            tid
            for status in ("failed", "cancelled")
            for tid in await index.finished_ids_since(
                swarm, status, started_ms, WAIT_SHOWN_FAILURES
            )
        ]
        tasks, _ = await self._fit(swarm, bad)
        return TaskListResult(tasks=tasks, counts=counts, omitted=sum(counts.values()) - len(tasks))

    async def clean(self, ctx: RequestContext, args: TaskCleanArgs) -> CountResult:
        swarm = await self.service.resolve(args.swarm)
        return CountResult(count=await self.service.tasks.clean(swarm, args.older_than_s))

    async def dlq_list(self, ctx: RequestContext, args: DlqListArgs) -> TaskListResult:
        swarm = await self.service.resolve(args.swarm)
        if not 1 <= args.limit <= MAX_PAGE:
            raise InvalidArgs(f"limit {args.limit}: expected 1..{MAX_PAGE}")
        tasks = await self.service.tasks.dlq_list(swarm, args.limit)
        shown, left = page_within(tasks, self._budget())
        return TaskListResult(tasks=shown, omitted=left)

    async def dlq_requeue(self, ctx: RequestContext, args: DlqRequeueArgs) -> CountResult:
        swarm = await self.service.resolve(args.swarm)
        return CountResult(count=await self.service.tasks.dlq_requeue(swarm, args.task))

    async def events_list(self, ctx: RequestContext, args: EventsArgs) -> EventsResult:
        swarm = await self.service.resolve(args.swarm)
        return EventsResult(
            events=await events.history(
                self.service.redis,
                self.service.store.keys,
                swarm,
                since_ms=args.since_ms,
                types=args.types,
                limit=args.limit,
            )
        )

    async def events_follow(self, ctx: RequestContext, args: EventsArgs) -> AsyncIterator[Event]:
        swarm = await self.service.resolve(args.swarm)
        async for ev in events.follow(
            self.service.redis,
            self.service.store.keys,
            self.service.hub,
            swarm,
            since_ms=args.since_ms,
            types=args.types,
            stop=self.stop,
        ):
            yield ev
