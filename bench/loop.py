"""A CFN run of 2 implementers and 4 validators with instant agents (the example agents).

    python bench/loop.py [--runs 3] [--json FILE]

Wall time from `loop.start` to the decision, split into agent process time and
coordination time. Agent time = the critical path of the agents' own processes: one
implementer run + one validator run (each timed here by running the same example
script on its own, median of 5; the implementers, then the validators, run in
parallel inside the loop). Coordination = wall - agent time. The first run also
starts the agents; the figures are the median of the runs after it.
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


async def run(runs: int) -> dict[str, Any]:
    walls: list[float] = []
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
    agent_s = script_s("implementer.py") + script_s("validator.py")
    wall = statistics.median(walls)
    return {
        "runs": runs,
        "wall_ms": wall * 1e3,
        "agent_ms": agent_s * 1e3,
        "coordination_ms": (wall - agent_s) * 1e3,
    }


def markdown(res: dict[str, Any]) -> str:
    return (
        "| CFN run, 2 implementers + 4 validators | ms |\n|---|---|\n"
        f"| wall to decision (median of {res['runs']}) | {res['wall_ms']:.0f} |\n"
        f"| agent processes (critical path) | {res['agent_ms']:.0f} |\n"
        f"| coordination | {res['coordination_ms']:.0f} |"
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
