"""CFN loop ops: start, status, list, follow, approve, reject, extend, cancel, backlog."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from cfn_client.wire.errors import InvalidArgs
from cfn_client.wire.schema.loop import (
    LoopApplyArgs,
    LoopApplyResult,
    LoopApproveArgs,
    LoopBacklogResult,
    LoopCancelArgs,
    LoopCleanResult,
    LoopExtendArgs,
    LoopFollowArgs,
    LoopListArgs,
    LoopListResult,
    LoopRefArgs,
    LoopRejectArgs,
    LoopStartArgs,
    RunInfo,
)
from cfn_client.wire.schema.swarm import Event
from cfn_client.wire.schema.workflow import (
    EpicInfo,
    EpicListArgs,
    EpicListResult,
    EpicRefArgs,
    EpicStartArgs,
)
from cfn_daemon.agent import types as agent_types
from cfn_daemon.api.router import (
    Handler,
    RequestContext,
    Router,
    require_exec,
    require_pool,
)
from cfn_daemon.cfnloop.epics import EpicService
from cfn_daemon.cfnloop.runner import LoopService
from cfn_daemon.core import loop


@dataclass
class LoopOps:
    service: LoopService
    epics: EpicService

    def register(self, router: Router) -> None:
        handlers: dict[str, Handler[Any, Any]] = {
            "loop.start": self.start,
            "loop.status": self.status,
            "loop.list": self.list_runs,
            "loop.approve": self.approve,
            "loop.reject": self.reject,
            "loop.extend": self.extend,
            "loop.cancel": self.cancel,
            "loop.backlog": self.backlog,
            "loop.apply": self.apply_result,
            "loop.clean": self.clean,
            "epic.start": self.epic_start,
            "epic.status": self.epic_status,
            "epic.list": self.epic_list,
        }
        for op, handler in handlers.items():
            router.add(op, handler)
        router.add_stream("loop.follow", self.follow)

    async def _swarm(self, swarm: str | None) -> str:
        return await self.service.swarms.resolve(swarm)

    def _require_exec(self, ctx: RequestContext, types: list[str], checks: list[str]) -> None:
        """Check commands, or a run whose agents run its text as code, need ``exec``."""
        if checks:
            require_exec(ctx, "checks are commands run as tasks")
        configured = self.service.swarms.config().agent_types
        for name in types:
            require_pool(ctx, name)
            try:
                code = agent_types.runs_text_as_code(name, configured)
            except InvalidArgs:
                continue  # the service names the unknown type
            if code:
                require_exec(ctx, f"agent type {name} runs the task text as code")

    async def start(self, ctx: RequestContext, args: LoopStartArgs) -> RunInfo:
        owner = [args.owner] if args.owner else []
        self._require_exec(ctx, [*args.implementers, *args.validators, *owner], args.checks)
        return await self.service.start(args)

    async def status(self, ctx: RequestContext, args: LoopRefArgs) -> RunInfo:
        return await self.service.info(await self._swarm(args.swarm), args.run)

    async def list_runs(self, ctx: RequestContext, args: LoopListArgs) -> LoopListResult:
        swarm = await self._swarm(args.swarm)
        return LoopListResult(runs=await self.service.all(swarm, args.status, args.limit))

    async def approve(self, ctx: RequestContext, args: LoopApproveArgs) -> RunInfo:
        reason = args.reason or f"approved by {ctx.peer.user}"
        return await self.service.human(
            await self._swarm(args.swarm), args.run, loop.HumanApproved(reason=reason)
        )

    async def reject(self, ctx: RequestContext, args: LoopRejectArgs) -> RunInfo:
        feedback = args.feedback or f"rejected by {ctx.peer.user}"
        return await self.service.human(
            await self._swarm(args.swarm), args.run, loop.HumanRejected(feedback=feedback)
        )

    async def extend(self, ctx: RequestContext, args: LoopExtendArgs) -> RunInfo:
        return await self.service.human(
            await self._swarm(args.swarm), args.run, loop.Extend(max_loop2=args.max_loop2)
        )

    async def cancel(self, ctx: RequestContext, args: LoopCancelArgs) -> RunInfo:
        reason = args.reason or f"cancelled by {ctx.peer.user}"
        return await self.service.human(
            await self._swarm(args.swarm), args.run, loop.Cancel(reason=reason)
        )

    async def backlog(self, ctx: RequestContext, args: LoopRefArgs) -> LoopBacklogResult:
        info = await self.service.info(await self._swarm(args.swarm), args.run)
        return LoopBacklogResult(run=info.id, items=info.backlog)

    async def apply_result(self, ctx: RequestContext, args: LoopApplyArgs) -> LoopApplyResult:
        return await self.service.apply_result(await self._swarm(args.swarm), args)

    async def clean(self, ctx: RequestContext, args: LoopRefArgs) -> LoopCleanResult:
        return await self.service.clean(await self._swarm(args.swarm), args.run)

    async def follow(self, ctx: RequestContext, args: LoopFollowArgs) -> AsyncIterator[Event]:
        async for ev in self.service.follow(await self._swarm(args.swarm), args.run):
            yield ev

    async def epic_start(self, ctx: RequestContext, args: EpicStartArgs) -> EpicInfo:
        for ph in args.epic.phases:
            owner = [ph.owner] if ph.owner else []
            self._require_exec(ctx, [*ph.implementers, *ph.validators, *owner], ph.checks)
        return await self.epics.start(args)

    async def epic_status(self, ctx: RequestContext, args: EpicRefArgs) -> EpicInfo:
        return await self.epics.info(await self._swarm(args.swarm), args.epic_id)

    async def epic_list(self, ctx: RequestContext, args: EpicListArgs) -> EpicListResult:
        return EpicListResult(epics=await self.epics.all(await self._swarm(args.swarm)))
