"""Swarm, agent and messaging ops."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from cfn_client.wire.errors import InvalidArgs
from cfn_client.wire.schema.swarm import (
    AgentCreateArgs,
    AgentInfo,
    AgentListArgs,
    AgentListResult,
    AgentRefArgs,
    AgentSendArgs,
    AgentTerminateArgs,
    DeliveriesResult,
    Delivery,
    SwarmBroadcastArgs,
    SwarmDestroyArgs,
    SwarmDestroyResult,
    SwarmInfo,
    SwarmInitArgs,
    SwarmListArgs,
    SwarmListResult,
    SwarmResetArgs,
    SwarmScaleArgs,
    SwarmScaleResult,
    SwarmStatusArgs,
    SwarmStatusResult,
)
from cfn_daemon.agent import types as agent_types
from cfn_daemon.api.router import (
    Handler,
    RequestContext,
    Router,
    require_exec,
    require_pool,
)
from cfn_daemon.core import topology
from cfn_daemon.core.placement import LIVE_STATUSES, AgentRecord, members_of
from cfn_daemon.queue.events import emit
from cfn_daemon.queue.streams import ack_and_delete
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.swarm.service import SwarmService


def public(agent: AgentRecord) -> AgentInfo:
    return msgspec.convert(msgspec.structs.asdict(agent), AgentInfo, strict=False)


@dataclass
class SwarmOps:
    service: SwarmService

    def register(self, router: Router) -> None:
        handlers: dict[str, Handler[Any, Any]] = {
            "swarm.init": self.init,
            "swarm.list": self.list_swarms,
            "swarm.status": self.status,
            "swarm.scale": self.scale,
            "swarm.destroy": self.destroy,
            "swarm.reset": self.reset,
            "swarm.broadcast": self.broadcast,
            "agent.create": self.agent_create,
            "agent.list": self.agent_list,
            "agent.status": self.agent_status,
            "agent.terminate": self.agent_terminate,
            "agent.restart": self.agent_restart,
            "agent.reset": self.agent_reset,
            "agent.send": self.agent_send,
        }
        for op, handler in handlers.items():
            router.add(op, handler)

    # ------------------------------------------------------------------ swarms

    async def init(self, ctx: RequestContext, args: SwarmInitArgs) -> SwarmInfo:
        return await self.service.init(args)

    async def list_swarms(self, ctx: RequestContext, args: SwarmListArgs) -> SwarmListResult:
        return SwarmListResult(swarms=await self.service.all())

    async def status(self, ctx: RequestContext, args: SwarmStatusArgs) -> SwarmStatusResult:
        return await self.service.status(await self.service.resolve(args.swarm))

    async def scale(self, ctx: RequestContext, args: SwarmScaleArgs) -> SwarmScaleResult:
        require_pool(ctx, args.type)
        swarm = await self.service.resolve(args.swarm)
        return await self.service.scale(swarm, args.agents, args.type, args.force)

    async def destroy(self, ctx: RequestContext, args: SwarmDestroyArgs) -> SwarmDestroyResult:
        swarm = await self.service.resolve(args.swarm)
        stopped = await self.service.destroy(swarm, force=args.force)
        return SwarmDestroyResult(swarm=swarm, stopped_agents=stopped)

    async def reset(self, ctx: RequestContext, args: SwarmResetArgs) -> SwarmDestroyResult:
        if not args.force:
            raise InvalidArgs(
                "swarm reset deletes every task and agent of the swarm; "
                "pass force=true (cfnctl swarm reset --force)"
            )
        swarm = await self.service.resolve(args.swarm)
        info = await self.service.info(swarm)
        stopped = await self.service.destroy(swarm, force=True)
        await self.service.init(
            SwarmInitArgs(
                topology=info.topology,
                max_agents=info.max_agents,
                strategy=info.strategy,
                name=swarm,
                # A reset test-mode swarm stays one, ending when it was going to.
                test_mode=info.ephemeral,
                ttl_s=max(1.0, (info.expires_at_ms - now_ms()) / 1000) if info.ephemeral else None,
            ),
            within_limits=False,
        )
        return SwarmDestroyResult(swarm=swarm, stopped_agents=stopped)

    async def broadcast(self, ctx: RequestContext, args: SwarmBroadcastArgs) -> DeliveriesResult:
        swarm = await self.service.resolve(args.swarm)
        info = await self.service.info(swarm)
        members = members_of(await self.service.registry.all(swarm))
        try:
            deliveries = topology.fanout(info.topology, members, args.from_agent)
        except topology.RoutingError as exc:
            raise InvalidArgs(str(exc)) from None
        out = [Delivery(to=d.to, path=list(d.path)) for d in deliveries]
        return await self._deliver(
            swarm, args.from_agent or "cfnd", args.message, out, "message.broadcast"
        )

    async def _deliver(
        self, swarm: str, sender: str, message: str, deliveries: list[Delivery], etype: str
    ) -> DeliveriesResult:
        mid = f"m{now_ms():x}{uuid.uuid4().hex[:4]}"
        keys = self.service.store.keys
        async with self.service.redis.pipeline(transaction=True) as pipe:
            for d in deliveries:
                pipe.xadd(
                    keys.inbox(swarm, d.to),
                    {
                        "id": mid,
                        "from": sender,
                        "message": message,
                        "path": ",".join(d.path),
                    },
                    maxlen=1000,
                    approximate=True,
                )
            await pipe.execute()
        await emit(
            self.service.redis,
            keys,
            swarm,
            etype,
            {
                "message": mid,
                "from": sender,
                "deliveries": [{"to": d.to, "path": d.path} for d in deliveries],
            },
        )
        return DeliveriesResult(message_id=mid, deliveries=deliveries)

    # ------------------------------------------------------------------ agents

    async def agent_create(self, ctx: RequestContext, args: AgentCreateArgs) -> AgentListResult:
        if not 1 <= args.count <= 50:
            raise InvalidArgs(f"count {args.count}: expected 1..50")
        swarm = await self.service.resolve(args.swarm)
        require_pool(ctx, args.type)
        configured = self.service.config().agent_types
        agent_types.require_runnable(args.type, configured)
        if args.task and agent_types.runs_text_as_code(args.type, configured):
            require_exec(ctx, f"agent type {args.type} runs the task text as code")
        rt = await self.service.runtime(swarm)
        ids = await rt.supervisor.spawn(
            args.type, role=args.role, capabilities=args.capabilities, count=args.count
        )
        if args.task:
            await self.service.tasks.submit(
                swarm,
                text=args.task,
                type=args.type,
                max_attempts=self.service.config().tasks.max_attempts,
            )
        agents = [await self.service.registry.get(swarm, a) for a in ids]
        return AgentListResult(agents=[public(a) for a in agents])

    async def agent_list(self, ctx: RequestContext, args: AgentListArgs) -> AgentListResult:
        swarm = await self.service.resolve(args.swarm)
        agents = await self.service.registry.all(swarm)
        if args.status is not None:
            agents = [a for a in agents if a.status == args.status]
        return AgentListResult(agents=[public(a) for a in agents])

    async def agent_status(self, ctx: RequestContext, args: AgentRefArgs) -> AgentInfo:
        swarm = await self.service.resolve(args.swarm)
        return public(await self.service.registry.get(swarm, args.agent))

    async def agent_terminate(self, ctx: RequestContext, args: AgentTerminateArgs) -> AgentInfo:
        swarm = await self.service.resolve(args.swarm)
        agent = await self.service.registry.get(swarm, args.agent)
        if agent.status not in LIVE_STATUSES:
            return public(agent)
        rt = await self.service.runtime(swarm)
        await rt.supervisor.request_stop(args.agent, force=args.force)
        return public(await self.service.registry.get(swarm, args.agent))

    async def agent_restart(self, ctx: RequestContext, args: AgentRefArgs) -> AgentInfo:
        """Stop the agent (its task goes back to the queue) and start a fresh one of the
        same type and role; returns the new agent."""
        swarm = await self.service.resolve(args.swarm)
        old = await self.service.registry.get(swarm, args.agent)
        rt = await self.service.runtime(swarm)
        await rt.supervisor.request_stop(args.agent, force=True)
        (new_id,) = await rt.supervisor.spawn(
            old.type, role=old.role, capabilities=old.capabilities
        )
        return public(await self.service.registry.get(swarm, new_id))

    async def agent_reset(self, ctx: RequestContext, args: AgentRefArgs) -> AgentInfo:
        """Give the agent's assigned and running tasks back to the queue and clear its load.

        The agent keeps running under its id: its work stream (and the consumer group
        its blocking read waits on) stays, only the entries go.
        """
        swarm = await self.service.resolve(args.swarm)
        await self.service.registry.get(swarm, args.agent)
        requeued = await self._requeue_work(swarm, args.agent)
        await self.service.registry.set_fields(swarm, args.agent, load=0, current_task="")
        await emit(
            self.service.redis,
            self.service.store.keys,
            swarm,
            "agent.reset",
            {"agent": args.agent, "requeued": requeued},
        )
        return public(await self.service.registry.get(swarm, args.agent))

    async def _requeue_work(self, swarm: str, agent: str) -> list[str]:
        tasks, redis = self.service.tasks, self.service.redis
        work = self.service.store.keys.work(swarm, agent)
        requeued: list[str] = []
        # Bounded: an agent's stream holds at most its few assigned entries.
        for entry_id, fields in await redis.xrange(work, count=10_000):
            raw = fields.get(b"t", b"")
            tid = raw.decode() if isinstance(raw, bytes) else str(raw)
            if tid:
                outcome = await tasks.requeue(
                    swarm, tid, reason="agent-reset", allowed=("assigned", "running")
                )
                if outcome == "queued":
                    requeued.append(tid)
            await ack_and_delete(redis, work, [entry_id])
        return requeued

    async def agent_send(self, ctx: RequestContext, args: AgentSendArgs) -> DeliveriesResult:
        swarm = await self.service.resolve(args.swarm)
        info = await self.service.info(swarm)
        members = members_of(await self.service.registry.all(swarm))
        try:
            path = topology.route(info.topology, members, args.from_agent, args.to_agent)
        except topology.RoutingError as exc:
            raise InvalidArgs(str(exc)) from None
        return await self._deliver(
            swarm,
            args.from_agent,
            args.message,
            [Delivery(to=args.to_agent, path=path)],
            "message.sent",
        )
