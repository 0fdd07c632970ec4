"""Placement: which agent takes which queued task, and in what order. Pure.

Order: high before normal before low, except that a task waiting longer than the
aging limit goes first (no starvation). Choice: by topology (ring order, hub/root
first for star and hierarchical) and strategy (balanced: least loaded; performance:
fastest measured task time; reliability: two replicas).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cfn_client.wire.schema.swarm import AgentInfo, SwarmInfo
from cfn_daemon.core import topology

PRIORITIES = ("high", "normal", "low")
LIVE_STATUSES = frozenset({"starting", "idle", "busy", "draining"})


class AgentRecord(AgentInfo, kw_only=True):
    """AgentInfo plus the scheduling fields kept in the same hash."""

    load: int = 0
    concurrency: int = 1
    ewma_ms: float | None = None
    desired: str = ""


@dataclass(slots=True)
class Pending:
    entry_id: str
    task_id: str
    priority: str
    type: str
    enqueued_ms: int
    target: str | None = None


def order_backlog(backlog: Iterable[Pending], now_ms: int, aging_ms: float) -> list[Pending]:
    """Tasks in the order they should be placed: aged ones first, then by priority, FIFO."""

    def key(p: Pending) -> tuple[int, int]:
        rank = PRIORITIES.index(p.priority) if p.priority in PRIORITIES else 1
        return (-1 if now_ms - p.enqueued_ms > aging_ms else rank, p.enqueued_ms)

    return sorted(backlog, key=key)


def members_of(agents: list[AgentRecord]) -> list[topology.Member]:
    return [topology.Member(id=a.id, alive=a.status in LIVE_STATUSES, role=a.role) for a in agents]


def choose(
    swarm: SwarmInfo,
    agents: list[AgentRecord],
    task_type: str,
    cursor: str | None,
    target: str | None = None,
) -> tuple[list[str], str]:
    """Pick the agent(s) for one task; returns (agent ids, via). Pure.

    A ``target`` pins the task to that agent (CFN loop roles): nobody else takes it.
    """
    live = [a for a in agents if a.status in ("idle", "busy")]
    order = topology.assignment_order(swarm.topology, members_of(live), start_after=cursor)
    rank = {aid: i for i, aid in enumerate(order)}
    free = [a for a in live if a.type == task_type and a.load < a.concurrency and a.id in rank]
    if target is not None:
        free = [a for a in free if a.id == target]
        return ([free[0].id] if free else []), ""
    if not free:
        return [], ""
    if swarm.topology == "ring":
        free.sort(key=lambda a: rank[a.id])  # the work token moves along the ring
    elif swarm.strategy == "performance":
        free.sort(key=lambda a: (a.ewma_ms or 0.0, a.load / a.concurrency, rank[a.id]))
    else:
        free.sort(key=lambda a: (a.load / a.concurrency, rank[a.id]))
    picked = free[: 2 if swarm.strategy == "reliability" else 1]
    lay = topology.layout(swarm.topology, members_of(live))
    via = (lay.hub or lay.root or "") if swarm.topology in ("star", "hierarchical") else ""
    return [a.id for a in picked], via
