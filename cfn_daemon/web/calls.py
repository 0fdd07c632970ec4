"""The console reads and acts through cfnd's own router, exactly as cfnctl does.

Each call runs the op's handler behind the same middleware as a socket request
(request log, refusal while draining, role check, store-outage mapping), with a peer
standing for the browser session: the user who ran ``cfnctl web``, at the session's
role. So the pages show the state in Redis (history survives restarts) and a viewer's
forged POST meets the same ``permission_denied`` as a viewer's cfnctl.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cfn_client.wire.schema.loop import RunInfo
from cfn_client.wire.schema.swarm import AgentInfo, Event, SwarmInfo, TaskInfo
from cfn_daemon.api.router import Peer, RequestContext, Router
from cfn_daemon.web.auth import Identity

HOUR_MS = 3_600_000
BUCKETS = 12  # the overview's throughput chart: 5-minute bars over the last hour
ACTIVE_RUN_STATUSES = frozenset({"new", "loop3", "loop2", "loop4"})


class Calls:
    """``await calls(who, "loop.status", swarm=..., run=...)`` -> the op's result."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, who: Identity, op: str, **args: Any) -> Any:
        # The console's own page loads and live updates: not rate limited per uid.
        peer = Peer(
            pid=0,
            uid=who.uid,
            gid=who.gid,
            user=f"{who.user} (web)",
            role=who.role,
            rate_exempt=True,
        )
        ctx = RequestContext(peer=peer, request_id=None, op=op)
        return await self.router.call(ctx, {k: v for k, v in args.items() if v is not None})


@dataclass(slots=True)
class SwarmSummary:
    info: SwarmInfo
    agents: list[AgentInfo]
    agents_by_status: dict[str, int]
    queues: dict[str, int]
    tasks: dict[str, int]
    done_1h: int = 0
    failed_1h: int = 0
    buckets: list[tuple[int, int]] = field(default_factory=list)  # (succeeded, failed)

    @property
    def failure_rate(self) -> float | None:
        total = self.done_1h + self.failed_1h
        return None if total == 0 else self.failed_1h / total


@dataclass(slots=True)
class Overview:
    swarms: list[SwarmSummary]
    running: list[RunInfo]
    escalated: list[RunInfo]


def throughput(events: list[Event], now_ms: int) -> tuple[int, int, list[tuple[int, int]]]:
    """Tasks succeeded and failed over the last hour, and per 5-minute bucket (pure)."""
    size = HOUR_MS // BUCKETS
    buckets = [[0, 0] for _ in range(BUCKETS)]
    done = failed = 0
    for ev in events:
        age = now_ms - ev.ts_ms
        if not 0 <= age < HOUR_MS:
            continue
        slot = BUCKETS - 1 - age // size
        if ev.type == "task.succeeded":
            done += 1
            buckets[slot][0] += 1
        elif ev.type == "task.failed":
            failed += 1
            buckets[slot][1] += 1
    return done, failed, [(a, b) for a, b in buckets]


async def overview(calls: Calls, who: Identity) -> Overview:
    """Every swarm's agents, queues and last hour, plus running and escalated runs."""
    now = int(time.time() * 1000)
    out = Overview(swarms=[], running=[], escalated=[])
    for info in (await calls(who, "swarm.list")).swarms:
        if info.status == "destroyed":
            continue
        st = await calls(who, "swarm.status", swarm=info.id)
        evs = await calls(
            who,
            "events.list",
            swarm=info.id,
            since_ms=now - HOUR_MS,
            types=["task.succeeded", "task.failed"],
            limit=10_000,
        )
        done, failed, buckets = throughput(evs.events, now)
        out.swarms.append(
            SwarmSummary(
                info=st.swarm,
                agents=st.agents,
                agents_by_status=dict(Counter(a.status for a in st.agents)),
                queues=st.queues,
                tasks=st.tasks,
                done_1h=done,
                failed_1h=failed,
                buckets=buckets,
            )
        )
        for run in (await calls(who, "loop.list", swarm=info.id, limit=200)).runs:
            if run.status == "escalated":
                out.escalated.append(run)
            elif run.status in ACTIVE_RUN_STATUSES:
                out.running.append(run)
    return out


async def escalated_runs(calls: Calls, who: Identity) -> list[RunInfo]:
    """Runs waiting for a human, in every swarm (the inbox)."""
    out: list[RunInfo] = []
    for info in (await calls(who, "swarm.list")).swarms:
        if info.status != "destroyed":
            out += (await calls(who, "loop.list", swarm=info.id, status="escalated")).runs
    return out


def task_filter(
    tasks: list[TaskInfo], *, status: str | None, type_: str | None, agent: str | None
) -> list[TaskInfo]:
    """The tasks page's filters (pure)."""
    return [
        t
        for t in tasks
        if (not status or t.status == status)
        and (not type_ or t.type == type_)
        and (not agent or t.agent == agent)
    ]


def agent_stats(tasks: list[TaskInfo]) -> dict[str, Any]:
    """An agent's success rate and durations over its recent tasks (pure)."""
    finished = [t for t in tasks if t.result is not None]
    ok = [t for t in finished if t.result is not None and t.result.ok]
    durations = sorted(t.result.duration_ms for t in finished if t.result is not None)
    return {
        "finished": len(finished),
        "succeeded": len(ok),
        "success_rate": (len(ok) / len(finished)) if finished else None,
        "median_ms": durations[len(durations) // 2] if durations else None,
        "max_ms": durations[-1] if durations else None,
    }
