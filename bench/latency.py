"""Latency: socket round trips, submit->result, whole-process CLI vs `python -c pass`.

    python bench/latency.py [--n 500] [--cli-n 10] [--json FILE]

cfnd runs in this process against a private redis-server (Unix socket, temp dir)
with one idle no-op agent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cfnd, percentile, private_redis  # noqa: E402
from cfn_client.api import AsyncClient  # noqa: E402
from cfn_daemon.util.aio import run_loop  # noqa: E402
from cfn_daemon.util.logs import configure_logging  # noqa: E402

NOOP = '[agent_types.noop]\nkind = "python"\nentry = "examples.agents.noop:run"\n'


def stats_us(samples: list[float]) -> dict[str, float]:
    return {
        "p50_us": percentile(samples, 0.5) * 1e6,
        "p99_us": percentile(samples, 0.99) * 1e6,
    }


def wall_s(argv: list[str], n: int, env: dict[str, str]) -> float:
    """Median wall time of ``argv`` run ``n`` times."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return percentile(times, 0.5)


async def kill_detect(socket_path: Path) -> dict[str, float]:
    """SIGKILL the agent; time until cfnd reports it failed/lost (polled every 5 ms)."""
    async with AsyncClient(socket_path, timeout_s=60) as c:
        (agent,) = [a for a in (await c.agent_list()).agents if a.status in ("idle", "busy")]
        assert agent.pid is not None
        t0 = time.perf_counter()
        os.kill(agent.pid, signal.SIGKILL)
        deadline = t0 + 30
        while time.perf_counter() < deadline:  # bounded by the deadline
            if (await c.agent_status(agent.id)).status in ("failed", "lost", "stopped"):
                return {"detect_ms": (time.perf_counter() - t0) * 1e3, "lapse_s": 5.0}
            await asyncio.sleep(0.005)
    raise RuntimeError("the killed agent was not detected within 30 s")


async def run(n: int, cli_n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with private_redis() as server, cfnd(server, NOOP) as daemon:
        async with AsyncClient(daemon.socket_path, timeout_s=60) as c:
            await c.call("swarm.init", topology="mesh", max_agents=2, name="bench")
            await c.call("agent.create", type="noop", count=1)
            first = await c.task_submit("x", type="noop")
            await c.task_wait([first.id], timeout_s=60)
            pings, statuses, starts = [], [], []
            for _ in range(n):
                t0 = time.perf_counter()
                await c.ping()
                pings.append(time.perf_counter() - t0)
            for _ in range(n):
                t0 = time.perf_counter()
                await c.task_status(first.id)
                statuses.append(time.perf_counter() - t0)
            for _ in range(max(5, n // 20)):  # idle agent: one at a time
                t0 = time.perf_counter()
                t = await c.task_submit("x", type="noop")
                await c.task_wait([t.id], timeout_s=60)
                starts.append(time.perf_counter() - t0)
            out["ping"] = stats_us(pings)
            out["task.status"] = stats_us(statuses)
            out["submit_to_result"] = stats_us(starts)
        env = {**os.environ, "CFN_SOCKET": str(daemon.socket_path)}
        cfnctl = str(Path(sys.executable).parent / "cfnctl")
        base = wall_s([sys.executable, "-c", "pass"], cli_n, env)
        version = wall_s([cfnctl, "--version"], cli_n, env)
        status = await asyncio.to_thread(wall_s, [cfnctl, "status"], cli_n, env)
        out["kill_detect"] = await kill_detect(daemon.socket_path)
        out["cli"] = {
            "python_c_pass_ms": base * 1e3,
            "cfnctl_version_ms": version * 1e3,
            "cfnctl_status_ms": status * 1e3,
            "version_ratio": version / base,
            "status_ratio": status / base,
        }
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = ["| measure | p50 | p99 |", "|---|---|---|"]
    for key in ("ping", "task.status", "submit_to_result"):
        if res.get(key):
            lines.append(f"| {key} | {res[key]['p50_us']:,.0f} us | {res[key]['p99_us']:,.0f} us |")
    cli = res["cli"]
    kd = res["kill_detect"]
    lines.append(
        f"| killed agent (SIGKILL) -> reported dead | {kd['detect_ms']:,.0f} ms "
        f"| (lapse_s {kd['lapse_s']:.0f} s) |"
    )
    lines += [
        "",
        "| whole process | median ms | x `python -c pass` |",
        "|---|---|---|",
        f"| python -c pass | {cli['python_c_pass_ms']:.1f} | 1.00x |",
        f"| cfnctl --version | {cli['cfnctl_version_ms']:.1f} | {cli['version_ratio']:.2f}x |",
        f"| cfnctl status | {cli['cfnctl_status_ms']:.1f} | {cli['status_ratio']:.2f}x |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--cli-n", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configure_logging("console", "warning")
    res = run_loop(run(args.n, args.cli_n))
    print(markdown(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
