"""Placement: which agent takes which queued task, and in what order. Pure.

Order: high before normal before low, except that a task waiting longer than the
aging limit goes first (no starvation). Choice: by topology (ring order, hub/root
first for star and hierarchical) and strategy (balanced: least loaded; performance:
fastest measured task time; reliability: two replicas). Cap: at most
``agents.max_llm_processes`` LLM CLI processes (agent types of an ``LLM_KINDS``
executor) at once; LLM tasks beyond it wait in the queue (``plan``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec

from cfn_client.wire.schema.swarm import AgentInfo, SwarmInfo
from cfn_daemon.core import topology

PRIORITIES = ("high", "normal", "low")
LIVE_STATUSES = frozenset({"starting", "idle", "busy", "draining"})
LLM_KINDS = frozenset({"claude", "codex"})  # executor kinds that run an LLM CLI process


class AgentRecord(AgentInfo, kw_only=True):
    """AgentInfo plus the scheduling fields kept in the same hash."""

    load: int = 0
    concurrency: int = 1
    ewma_ms: float | None = None
    desired: str = ""
    incarnation: str = ""  # the agent process now serving this id (cfn-agent sets it)

    @property
    def slot_id(self) -> str:
        """The slot this agent fills (pinned tasks name slots)."""
        return self.slot or self.id


@dataclass(slots=True)
class Pending:
    entry_id: str
    task_id: str
    priority: str
    type: str
    enqueued_ms: int
    target: str | None = None

    @property
    def key(self) -> str:
        """Its key in the dispatcher's backlog. A stream entry id is unique only within
        its queue: tasks queued in the same millisecond (one MULTI of submits) get the
        same ``<ms>-0`` in ``q:high`` and ``q:normal``, so the id alone would drop one."""
        return f"{self.priority} {self.entry_id}"


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

    A ``target`` pins the task to that agent slot (CFN loop roles): only the agent
    filling it (the original agent, or the replacement of a dead one) takes it.
    """
    live = [a for a in agents if a.status in ("idle", "busy")]
    order = topology.assignment_order(swarm.topology, members_of(live), start_after=cursor)
    rank = {aid: i for i, aid in enumerate(order)}
    free = [a for a in live if a.type == task_type and a.load < a.concurrency and a.id in rank]
    if target is not None:
        free = [a for a in free if a.slot_id == target]
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


# ---------------------------------------------------------------------------- one pass


@dataclass(frozen=True, slots=True)
class LlmRoom:
    """The LLM process cap (> 0) and how many more LLM processes may start now."""

    cap: int
    free: int


def llm_load(agents: Iterable[AgentRecord], is_llm: Callable[[str], bool]) -> int:
    """LLM processes in flight on these agents: the load of live agents of an LLM type."""
    return sum(a.load for a in agents if a.status in LIVE_STATUSES and is_llm(a.type))


def llm_room(cap: int, loads: Iterable[int]) -> LlmRoom | None:
    """Room left under ``cap`` given the LLM loads of every swarm; None: no cap (0)."""
    if cap <= 0:
        return None
    return LlmRoom(cap=cap, free=max(0, cap - sum(loads)))


@dataclass(slots=True)
class Placement:
    pending: Pending
    agents: list[str]
    via: str


@dataclass(slots=True)
class Plan:
    """What one dispatcher pass assigns, and what it leaves waiting for the LLM cap."""

    placements: list[Placement] = field(default_factory=list)
    cursor: str | None = None
    llm_used: int = 0  # LLM processes the placements start (each replica counts)
    llm_held: int = 0  # LLM tasks left in the queue because the cap is reached


def plan(
    swarm: SwarmInfo,
    agents: list[AgentRecord],
    ordered: Iterable[Pending],
    cursor: str | None,
    *,
    is_llm: Callable[[str], bool] = lambda _type: False,
    llm: LlmRoom | None = None,
) -> Plan:
    """Place the ``ordered`` backlog on ``agents`` (not modified) as far as they have room.

    Each task goes where ``choose`` puts it, seeing the load of the tasks placed before
    it. With an ``llm`` room, a task of an LLM type (``is_llm``) starts only if all its
    replicas fit in ``llm.free``; the first one that does not fit closes the room for
    the rest of the pass, so LLM tasks keep their order (no starvation). Other tasks
    are placed regardless. A task that needs more replicas than the whole cap runs
    ``llm.cap`` of them (so reliability still works with a cap of 1).
    """
    out = Plan(cursor=cursor)
    agents = [msgspec.structs.replace(a) for a in agents]
    by_id = {a.id: a for a in agents}
    free = sum(max(0, a.concurrency - a.load) for a in agents if a.status in ("idle", "busy"))
    cap, room = (llm.cap, llm.free) if llm is not None else (0, 0)
    for pending in ordered:
        if free <= 0:
            break  # every agent is full: the rest waits for the next pass
        capped = llm is not None and is_llm(pending.type)
        if capped and room == 0:
            out.llm_held += 1
            continue
        picked, via = choose(swarm, agents, pending.type, out.cursor, pending.target)
        if not picked:
            continue  # nobody free for this type yet; others may still fit
        if capped:
            picked = picked[:cap]
            if len(picked) > room:
                out.llm_held += 1
                room = 0
                continue
            room -= len(picked)
            out.llm_used += len(picked)
        out.placements.append(Placement(pending, picked, via))
        for aid in picked:
            by_id[aid].load += 1  # so the next choice sees this one
        free -= len(picked)
        out.cursor = picked[-1]
    return out
