"""A CFN run of 2 implementers and 4 validators with instant agents (the example agents).

    python bench/loop.py [--runs 3] [--json FILE]

Wall time from `loop.start` to the decision, split into agent time and coordination
time. Agent time = the run's critical path through its agents' own work: for each phase
of each round (the implementers, then the validators, ...: the tasks of a phase run in
parallel), the slowest task's own duration as its agent measured it (the stored
result's ``duration_ms``: the process from spawn to exit, on this loaded machine with
its siblings running beside it), summed. Coordination = wall - agent time: what cfn adds
(dispatch, worktrees, diffs, consensus, events). For reference, one example agent process
run alone (median of 5) is reported too. The first run also starts the agents; the
figures are the median of the runs after it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cfnd, private_redis  # noqa: E402
from cfn_client.api import AsyncClient  # noqa: E402
from cfn_daemon.util.aio import run_loop  # noqa: E402
from cfn_daemon.util.logs import configure_logging  # noqa: E402

EXAMPLES = ROOT / "examples" / "agents"


def config() -> str:
    out = ""
    for name, script, role in (
        ("impl", "implementer.py", "implementer"),
        ("check", "validator.py", "validator"),
    ):
        out += (
            f'[agent_types.{name}]\nkind = "command"\n'
            f'exec = ["{sys.executable}", "{EXAMPLES / script}"]\nrole = "{role}"\n'
            'env = { EXAMPLE_CONFIDENCE = "0.9" }\n'
        )
    return out


def script_s(script: str) -> float:
    """Median wall time of one example agent process answering a minimal task."""
    task = json.dumps({"id": "t", "text": "x", "context": {"iteration": 1}})
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, str(EXAMPLES / script)], input=task, text=True,
            capture_output=True, check=False, env={**os.environ, "EXAMPLE_CONFIDENCE": "0.9"},
        )  # fmt: skip
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def phase_of(task_id: str, run: str) -> str:
    """The round and phase a run's task belongs to (its id: core.run_records)."""
    parts = task_id[len(run) + 1 :].split(".")
    rnd, rest = parts[0], parts[1:]
    if rest[:1] == ["v"]:
        return f"{rnd}.validators"
    if any(p.startswith("check") for p in rest):
        return f"{rnd}.checks"
    return f"{rnd}.{rest[0]}"  # i<iteration> (implementers) or owner


async def critical_path_s(c: AsyncClient, run: str) -> float:
    """Sum over the run's phases of its slowest task's own duration."""
    listed = await c.call("task.list", limit=1000)
    slowest: dict[str, float] = {}
    for t in listed.tasks:
        if not t.id.startswith(f"{run}."):
            continue
        full = await c.call("task.status", task=t.id)
        if full.result is None:
            continue
        phase = phase_of(t.id, run)
        slowest[phase] = max(slowest.get(phase, 0.0), full.result.duration_ms / 1e3)
    return sum(slowest.values())


async def run(runs: int) -> dict[str, Any]:
    walls: list[float] = []
    paths: list[float] = []
    rounds: list[int] = []
    async with (
        private_redis() as server,
        cfnd(server, config()) as daemon,
        AsyncClient(daemon.socket_path, timeout_s=120) as c,
    ):
        await c.call("swarm.init", topology="mesh", max_agents=8, name="bench")
        for i in range(runs + 1):
            t0 = time.perf_counter()
            info = await c.call(
                        "loop.start", task=f"bench {i}",
                        implementers=["impl", "impl"], validators=["check"] * 4,
                    )  # fmt: skip
            async with c.stream("loop.follow", {"run": info.id}) as events:
                async for _ in events:
                    pass
            done = await c.call("loop.status", run=info.id)
            if done.status != "done":
                raise RuntimeError(f"loop run ended {done.status}")
            if i:
                walls.append(time.perf_counter() - t0)
                paths.append(await critical_path_s(c, info.id))
                rounds.append(max(1, len(done.rounds)))
    alone_s = script_s("implementer.py") + script_s("validator.py")
    coordination = statistics.median(w - p for w, p in zip(walls, paths, strict=True))
    return {
        "runs": runs,
        "wall_ms": statistics.median(walls) * 1e3,
        "agent_ms": statistics.median(paths) * 1e3,
        "agent_alone_ms": alone_s * 1e3,
        "coordination_ms": coordination * 1e3,
        "rounds": statistics.median(rounds),
        "coordination_per_round_ms": statistics.median(
            (w - p) / r for w, p, r in zip(walls, paths, rounds, strict=True)
        )
        * 1e3,
    }


def markdown(res: dict[str, Any]) -> str:
    return (
        "| CFN run, 2 implementers + 4 validators | ms |\n|---|---|\n"
        f"| wall to decision (median of {res['runs']}) | {res['wall_ms']:.0f} |\n"
        f"| agents' critical path in the run | {res['agent_ms']:.0f} |\n"
        f"| coordination (wall - critical path) | {res['coordination_ms']:.0f} |\n"
        f"| Loop 2 rounds | {res['rounds']:g} |\n"
        f"| coordination per round | {res['coordination_per_round_ms']:.0f} |\n"
        f"| (one implementer + one validator process alone) | {res['agent_alone_ms']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configure_logging("console", "warning")
    res = run_loop(run(args.runs))
    print(markdown(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
