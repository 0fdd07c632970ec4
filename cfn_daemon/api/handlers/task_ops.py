"""Task, dead-letter and event ops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from cfn_client.wire.errors import InvalidArgs, RequestTimeout
from cfn_client.wire.schema.swarm import (
    TERMINAL_TASK_STATUSES,
    CountResult,
    DlqListArgs,
    DlqRequeueArgs,
    Event,
    EventsArgs,
    EventsResult,
    TaskCleanArgs,
    TaskInfo,
    TaskListArgs,
    TaskListResult,
    TaskRefArgs,
    TaskSubmitArgs,
    TaskWaitArgs,
)
from cfn_daemon.agent import types as agent_types
from cfn_daemon.api.router import Handler, RequestContext, Router
from cfn_daemon.core.placement import LIVE_STATUSES
from cfn_daemon.queue import events
from cfn_daemon.swarm.service import SwarmService
from cfn_daemon.util.aio import until_stopped

WAIT_RECHECK_S = 5.0


@dataclass
class TaskOps:
    service: SwarmService
    stop: asyncio.Event  # the daemon's stop event: ends follow streams

    def register(self, router: Router) -> None:
        handlers: dict[str, Handler[Any, Any]] = {
            "task.submit": self.submit,
            "task.list": self.list_tasks,
            "task.status": self.status,
            "task.cancel": self.cancel,
            "task.retry": self.retry,
            "task.wait": self.wait,
            "task.clean": self.clean,
            "dlq.list": self.dlq_list,
            "dlq.requeue": self.dlq_requeue,
            "events.list": self.events_list,
        }
        for op, handler in handlers.items():
            router.add(op, handler)
        router.add_stream("events.follow", self.events_follow)

    async def submit(self, ctx: RequestContext, args: TaskSubmitArgs) -> TaskInfo:
        swarm = await self.service.resolve(args.swarm)
        # The running swarm's record is in memory: no Redis reads on this hot path.
        rt = self.service.runtimes.get(swarm)
        info = rt.info if rt is not None else await self.service.info(swarm)
        if info.status != "active":
            raise InvalidArgs(f"swarm {swarm} is {info.status}; it takes no new tasks")
        cfg = self.service.config()
        agent_types.resolve(args.type, cfg.agent_types)  # unknown type: a clear error now
        task = await self.service.tasks.submit(
            swarm,
            text=args.text,
            type=args.type,
            priority=args.priority,
            timeout_s=args.timeout_s or (cfg.tasks.default_timeout_s or None),
            max_attempts=args.max_attempts or cfg.tasks.max_attempts,
            idempotency_key=args.idempotency_key,
            idempotency_ttl_s=cfg.tasks.idempotency_ttl_s,
        )
        await self._ensure_worker(swarm, args.type, info.max_agents)
        return task

    async def _ensure_worker(self, swarm: str, agent_type: str, max_agents: int) -> None:
        """Out of the box: with no agent of the task's type, start one (room permitting)."""
        rt = self.service.runtimes.get(swarm)
        if rt is not None and agent_type in rt.dispatcher.live_types:
            return  # the dispatcher saw a live agent of this type on its last pass
        agents = [a for a in await self.service.registry.all(swarm) if a.status in LIVE_STATUSES]
        if any(a.type == agent_type for a in agents) or len(agents) >= max_agents:
            return
        rt = await self.service.runtime(swarm)
        await rt.supervisor.spawn(agent_type)

    async def list_tasks(self, ctx: RequestContext, args: TaskListArgs) -> TaskListResult:
        swarm = await self.service.resolve(args.swarm)
        return TaskListResult(tasks=await self.service.tasks.recent(swarm, args.status, args.limit))

    async def status(self, ctx: RequestContext, args: TaskRefArgs) -> TaskInfo:
        return await self.service.tasks.get(await self.service.resolve(args.swarm), args.task)

    async def cancel(self, ctx: RequestContext, args: TaskRefArgs) -> TaskInfo:
        return await self.service.tasks.cancel(await self.service.resolve(args.swarm), args.task)

    async def retry(self, ctx: RequestContext, args: TaskRefArgs) -> TaskInfo:
        return await self.service.tasks.retry(await self.service.resolve(args.swarm), args.task)

    async def wait(self, ctx: RequestContext, args: TaskWaitArgs) -> TaskListResult:
        """Block until every named task (or every task, with ``all``) is finished."""
        swarm = await self.service.resolve(args.swarm)
        if not args.tasks and not args.all:
            raise InvalidArgs("name the tasks to wait for, or set all=true")
        queue = self.service.tasks
        ids = list(args.tasks)
        if args.all:
            ids = [t.id for t in await queue.recent(swarm, limit=10_000)]
        for tid in ids:
            await queue.get(swarm, tid)  # unknown ids fail now, not after the wait
        pulse = self.service.hub.pulses(swarm).done
        loop = asyncio.get_running_loop()
        deadline = None if args.timeout_s is None else loop.time() + args.timeout_s
        while True:
            waiter = pulse.current()
            tasks = await queue.get_many(swarm, ids)
            if all(t.status in TERMINAL_TASK_STATUSES for t in tasks):
                return TaskListResult(tasks=tasks)
            remaining = WAIT_RECHECK_S if deadline is None else deadline - loop.time()
            if remaining <= 0:
                pending = [t.id for t in tasks if t.status not in TERMINAL_TASK_STATUSES]
                raise RequestTimeout(
                    f"{len(pending)} task(s) still unfinished after {args.timeout_s} s: "
                    f"{', '.join(pending[:10])}",
                    details={"pending": pending},
                )
            await until_stopped(
                asyncio.wait_for(waiter.wait(), min(remaining, WAIT_RECHECK_S)), self.stop
            )
            if self.stop.is_set():
                raise RequestTimeout("cfnd is shutting down; wait again when it is back")

    async def clean(self, ctx: RequestContext, args: TaskCleanArgs) -> CountResult:
        swarm = await self.service.resolve(args.swarm)
        return CountResult(count=await self.service.tasks.clean(swarm, args.older_than_s))

    async def dlq_list(self, ctx: RequestContext, args: DlqListArgs) -> TaskListResult:
        swarm = await self.service.resolve(args.swarm)
        return TaskListResult(tasks=await self.service.tasks.dlq_list(swarm, args.limit))

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
