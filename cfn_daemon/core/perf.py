"""Per-agent performance from its recent executions (pure: values in, values out)."""

from __future__ import annotations

import math

from cfn_client.wire.schema.observe import AgentPerf, Execution, TypePerf


def summarize(swarm: str, agent: str, runs: list[Execution], *, recent: int = 0) -> AgentPerf:
    """Success rate, mean / min / max / p95 duration and a per-type breakdown."""
    out = AgentPerf(swarm=swarm, agent=agent, recent=runs[:recent])
    if not runs:
        return out
    durations = sorted(r.duration_ms for r in runs)
    out.executions = len(runs)
    out.successes = sum(1 for r in runs if r.ok)
    out.success_rate = round(out.successes / len(runs), 4)
    out.mean_ms = round(sum(durations) / len(durations), 3)
    out.min_ms, out.max_ms = durations[0], durations[-1]
    out.p95_ms = durations[max(0, math.ceil(0.95 * len(durations)) - 1)]
    for ttype in sorted({r.type for r in runs}):
        mine = [r for r in runs if r.type == ttype]
        out.by_type[ttype] = TypePerf(
            executions=len(mine),
            success_rate=round(sum(1 for r in mine if r.ok) / len(mine), 4),
            mean_ms=round(sum(r.duration_ms for r in mine) / len(mine), 3),
        )
    return out
