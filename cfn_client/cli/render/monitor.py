"""What ``cfnctl monitor`` shows: pure functions from snapshots to lines of text.

Nothing here touches the terminal or the socket, so every screen can be tested
from plain ``SwarmStatusResult`` Structs: ``throughput`` compares two snapshots,
``screen`` lays one out, ``fit`` cuts the lines to a terminal's width and height.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import get_args

from cfn_client.cli import render
from cfn_client.wire.schema.swarm import TERMINAL_TASK_STATUSES, SwarmStatusResult, TaskStatus

#: Queue depths, in this order (cfnd's keys; any other key follows them).
QUEUE_ORDER: tuple[str, ...] = ("high", "normal", "low", "retrying")
#: Task counts, in lifecycle order; every status is shown, zeros too, so columns stay put.
#: Unfinished ones on a ``tasks`` line (with any status this client does not know), the
#: terminal ones on an ``ended`` line: both fit 80 columns.
TASK_ORDER: tuple[str, ...] = get_args(TaskStatus)
ENDED_ORDER: tuple[str, ...] = tuple(s for s in TASK_ORDER if s in TERMINAL_TASK_STATUSES)
OPEN_ORDER: tuple[str, ...] = tuple(s for s in TASK_ORDER if s not in ENDED_ORDER)
#: The statuses whose growth is throughput: a task that ended by running.
FINISHED_STATUSES: tuple[str, ...] = ("succeeded", "failed")

NO_SWARMS = "no swarms (create one with `cfnctl swarm init TOPOLOGY MAX_AGENTS`)"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every watched swarm's status, as fetched at one moment."""

    swarms: tuple[SwarmStatusResult, ...]
    #: ``time.monotonic()`` when fetched: throughput divides by the difference of two.
    at_s: float
    #: Wall-clock epoch milliseconds, for the clock on screen.
    wall_ms: int
    #: Swarms asked for by name (``--swarm``) that cfnd no longer knows.
    missing: tuple[str, ...] = ()


def finished(status: SwarmStatusResult) -> int:
    """How many of the swarm's tasks have finished (succeeded or failed)."""
    return sum(status.tasks.get(name, 0) for name in FINISHED_STATUSES)


def throughput(previous: Snapshot | None, current: Snapshot) -> dict[str, float | None]:
    """Tasks finished per second since ``previous``, per swarm id.

    None where it cannot be known: no earlier sample of that swarm, no time
    elapsed, or fewer finished tasks than before (``task clean`` removed some).
    """
    elapsed = current.at_s - previous.at_s if previous is not None else 0.0
    before = {s.swarm.id: finished(s) for s in previous.swarms} if previous is not None else {}
    rates: dict[str, float | None] = {}
    for status in current.swarms:
        done_before = before.get(status.swarm.id)
        delta = finished(status) - done_before if done_before is not None else -1
        rates[status.swarm.id] = delta / elapsed if delta >= 0 and elapsed > 0 else None
    return rates


def format_rate(rate: float | None) -> str:
    """``2.50/s``, ``12.0/s``; ``-`` when unknown."""
    if rate is None:
        return "-"
    return f"{rate:.2f}/s" if rate < 10 else f"{rate:.1f}/s"


def _ordered(counts: Mapping[str, int], order: Sequence[str], others_after: bool = True) -> str:
    """``name n`` for each of ``order`` (then, if ``others_after``, for every other key)."""
    names = [*order, *sorted(k for k in counts if k not in order and others_after)]
    return "  ".join(f"{name} {counts.get(name, 0)}" for name in names)


def swarm_block(status: SwarmStatusResult, rate: float | None) -> list[str]:
    """One swarm: a header, its queues, its tasks (open, then ended), its agents table."""
    info = status.swarm
    open_tasks = {name: n for name, n in status.tasks.items() if name not in ENDED_ORDER}
    lines = [
        f"swarm {render.swarm_label(info)}  {info.topology}/{info.strategy}  "
        f"agents {info.agents}/{info.max_agents}  {info.status}  "
        f"throughput {format_rate(rate)}",
        "  queues  " + _ordered(status.queues, QUEUE_ORDER),
        "  tasks   " + _ordered(open_tasks, OPEN_ORDER),
        "  ended   " + _ordered(status.tasks, ENDED_ORDER, others_after=False),
    ]
    if status.agents:
        # Uncut and plain: fit() cuts the whole screen by characters, which colour
        # codes would throw off.
        agents = render.agents_table(status.agents, width=None, colour=False)
        lines += ["  " + line for line in agents.splitlines()]
    else:
        lines.append("  no agents")
    return lines


def title(snapshot: Snapshot, interval_s: float | None = None) -> str:
    """The first line: how many swarms, when, and (live) how to quit."""
    clock = datetime.fromtimestamp(snapshot.wall_ms / 1000).strftime("%H:%M:%S")
    n = len(snapshot.swarms)
    text = f"cfnctl monitor  {n} swarm{'' if n == 1 else 's'}  {clock}"
    if interval_s is not None:
        text += f"  every {interval_s:g}s  (q or Ctrl-C to quit)"
    return text


def screen(
    snapshot: Snapshot,
    rates: Mapping[str, float | None] | None = None,
    *,
    interval_s: float | None = None,
) -> list[str]:
    """Every line of one screen (uncut): the title, then each swarm's block.

    ``interval_s`` marks a live screen (its title says how to quit).
    """
    rates = rates or {}
    lines = [title(snapshot, interval_s)]
    for missing in snapshot.missing:
        lines += ["", f"swarm {missing}: not found (destroyed?)"]
    if not snapshot.swarms and not snapshot.missing:
        lines += ["", NO_SWARMS]
    for status in snapshot.swarms:
        lines += ["", *swarm_block(status, rates.get(status.swarm.id))]
    return lines


def fit(lines: Iterable[str], width: int | None, height: int | None) -> list[str]:
    """``lines`` cut to ``width`` columns and at most ``height`` lines (None: no limit).

    When lines are left out, the last line says how many.
    """
    cut = list(lines)
    if width is not None:
        width = max(width, 1)
        cut = [line[:width] for line in cut]
    if height is not None and len(cut) > height:
        keep = max(height, 1) - 1
        more = f"... {len(cut) - keep} more lines (enlarge the terminal, or pick one with --swarm)"
        cut = [*cut[:keep], more[:width] if width is not None else more]
    return cut
