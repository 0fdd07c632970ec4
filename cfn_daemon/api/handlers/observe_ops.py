"""``metrics.agents``: agents' recent executions, kept by complete.lua (guide §9);
``agent.debug``: one agent's troubleshooting view (``swarm.agent_debug``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from cfn_client.wire.schema.debug import AgentDebugArgs, AgentDebugResult
from cfn_client.wire.schema.observe import Execution, MetricsArgs, MetricsResult
from cfn_daemon.api.router import RequestContext, Router
from cfn_daemon.core.perf import summarize
from cfn_daemon.store.keys import PERF_KEEP
from cfn_daemon.swarm.agent_debug import agent_debug
from cfn_daemon.swarm.service import SwarmService

RECENT_SHOWN = 20


@dataclass
class ObserveOps:
    swarms: SwarmService

    def register(self, router: Router) -> None:
        router.add("metrics.agents", self.metrics_agents)
        router.add("agent.debug", self.agent_debug)

    async def agent_debug(self, ctx: RequestContext, args: AgentDebugArgs) -> AgentDebugResult:
        return await agent_debug(self.swarms, args)

    async def metrics_agents(self, ctx: RequestContext, args: MetricsArgs) -> MetricsResult:
        if args.swarm is None and args.agent is None:
            ids = [s.id for s in await self.swarms.all()]
        else:
            ids = [await self.swarms.resolve(args.swarm)]
        redis: Any = self.swarms.redis
        keys = self.swarms.store.keys
        out = []
        for swarm in ids:
            if args.agent is not None:
                agents = [(await self.swarms.registry.get(swarm, args.agent)).id]
            else:
                agents = [a.id for a in await self.swarms.registry.all(swarm)]
            for agent in agents:
                raw = await redis.lrange(keys.perf(swarm, agent), 0, PERF_KEEP - 1)
                runs = [_execution(r) for r in raw]
                shown = RECENT_SHOWN if args.agent is not None else 0
                out.append(summarize(swarm, agent, runs, recent=shown))
        return MetricsResult(agents=out)


def _execution(raw: bytes) -> Execution:
    d = msgspec.json.decode(raw)
    return Execution(
        ts_ms=int(d.get("ts", 0)),
        type=str(d.get("type", "?")),
        task=str(d.get("task", "")),
        duration_ms=float(d.get("ms", 0)),
        ok=bool(d.get("ok")),
    )
