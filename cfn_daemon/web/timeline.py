"""A CFN run as a timeline of rounds, from its ``loop.*`` events (pure).

Each event belongs to one group: the run's start, a Loop-3 iteration (implementers,
their confidences, the gate), a Loop-2 round (votes, the trimmed score, suspects,
feedback), or the decision (owner, escalation, human answer, finish). The run page
renders the groups in order; live updates append an event to its group, creating the
group when it is new, so the page and the stream agree on the layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cfn_client.wire.schema.swarm import Event

SEVERITY_ORDER = ("critical", "high", "medium", "low")
# What ends a run's wait for the machine: the page shows the human's options then.
AT_REST = frozenset({"escalated", "done", "cancelled", "failed"})


@dataclass(frozen=True, slots=True)
class Group:
    id: str  # an HTML id
    title: str
    kind: str  # start, loop3, loop2, decision


@dataclass(slots=True)
class Section:
    group: Group
    events: list[Event] = field(default_factory=list)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def group_of(ev: Event) -> Group:
    """The group an event of a run belongs to."""
    d = ev.data
    rnd, it = _int(d.get("round")), _int(d.get("iteration"))
    if ev.type in ("loop.iteration", "loop.implementer_done", "loop.candidate", "loop.gate"):
        title = f"Loop 3 · round {rnd} · iteration {it}"
        if d.get("max_loop3"):
            title += f" of {d['max_loop3']}"
        return Group(f"g-r{rnd}-i{it}", title, "loop3")
    if ev.type in ("loop.validating", "loop.vote", "loop.round"):
        return Group(f"g-r{rnd}-v", f"Loop 2 · consensus round {rnd}", "loop2")
    if ev.type == "loop.started":
        return Group("g-start", "Started", "start")
    return Group(f"g-r{rnd}-d", f"Decision · round {rnd}" if rnd else "Decision", "decision")


def of_run(events: list[Event], run_id: str) -> list[Event]:
    """The run's own loop events, in stream order."""
    return [e for e in events if e.type.startswith("loop.") and e.data.get("run") == run_id]


def sections(events: list[Event]) -> list[Section]:
    """Group events (already the run's own) in order of first appearance."""
    out: dict[str, Section] = {}
    for ev in events:
        g = group_of(ev)
        out.setdefault(g.id, Section(g)).events.append(ev)
    return list(out.values())


def gate_threshold(events: list[Event]) -> float | None:
    """The run's gate threshold, once a gate has been announced."""
    for ev in reversed(events):
        if ev.type == "loop.gate" and isinstance(ev.data.get("gate_threshold"), int | float):
            return float(ev.data["gate_threshold"])
    return None


def by_severity(items: Any) -> list[dict[str, Any]]:
    """Feedback items most severe first (unknown severities last)."""
    if not isinstance(items, list):
        return []
    good = [i for i in items if isinstance(i, dict)]
    rank = {s: n for n, s in enumerate(SEVERITY_ORDER)}
    return sorted(good, key=lambda i: rank.get(str(i.get("severity")), len(rank)))


def status_after(ev: Event) -> str | None:
    """The run status an event announces, if it changes it."""
    if ev.type == "loop.escalated":
        return "escalated"
    if ev.type == "loop.finished":
        return str(ev.data.get("status") or "done")
    if ev.type == "loop.iteration":
        return "loop3"
    if ev.type == "loop.validating":
        return "loop2"
    return None


def percent(value: Any) -> int:
    """A 0..1 score as a whole percentage (clamped; junk reads as 0)."""
    if not isinstance(value, int | float) or value != value:
        return 0
    return max(0, min(100, round(float(value) * 100)))
