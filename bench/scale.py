"""Scale: `swarm.status` and the monitor's poll against stored tasks, Redis bytes per
stored task, 100 clients, an idle cfn-agent, and cfnd under 10 / 100 / 1,000 agents
heartbeating at 1 Hz.

    python bench/scale.py [--stored 0,1000,10000,50000] [--clients 100]
                          [--heartbeaters 10,100,1000] [--beat-s 10] [--json FILE]

Tasks are stored by submitting them in batches (``task.submit_many``) to a no-op agent (started by
cfnd for the first one) and waiting until every one has finished: what a swarm keeps
(finished tasks with their results, until the retention). Then ``swarm.status`` and the
monitor's poll (what ``cfnctl
monitor`` calls each interval: ``swarm.list``, then ``swarm.status`` of each swarm)
are timed (median of 5), and how they grow with N is printed as the ratio to the first
row. The heartbeaters are emulated remote agents against a separate cfnd process
(bench/heartbeats.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import heartbeats  # noqa: E402
from bench.common import cfnd, percentile, private_redis, proc_cpu_s, rss_bytes  # noqa: E402
from cfn_client.api import AsyncClient  # noqa: E402
from cfn_daemon.util.aio import run_loop  # noqa: E402
from cfn_daemon.util.logs import configure_logging  # noqa: E402

NOOP = '[agent_types.noop]\nkind = "python"\nentry = "examples.agents.noop:run"\n'
# The idle agents' own type: the stored noop tasks never reach them.
NOOP += '[agent_types.idle]\nkind = "python"\nentry = "examples.agents.noop:run"\n'


async def timed(c: AsyncClient, reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        await c.swarm_status()
        times.append(time.perf_counter() - t0)
    return percentile(times, 0.5)


async def monitor_poll(c: AsyncClient, reps: int = 5) -> float:
    """One ``cfnctl monitor`` refresh (cfn_client.cli.commands.monitor.fetch, no
    --swarm): ``swarm.list``, then ``swarm.status`` of every swarm (median of ``reps``)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for info in (await c.swarm_list()).swarms:
            await c.swarm_status(info.id)
        times.append(time.perf_counter() - t0)
    return percentile(times, 0.5)


async def idle_agents(c: AsyncClient, idle_s: float, count: int = 2) -> dict[str, float]:
    """RSS and CPU share of idle cfn-agent processes (one slot each) over ``idle_s``."""
    created = (await c.agent_create(type="idle", count=count)).agents
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # bounded: until they all run (idle)
        infos = [await c.agent_status(a.id) for a in created]
        if all(i.status == "idle" and i.pid for i in infos):
            break
        await asyncio.sleep(0.05)
    pids = [i.pid for i in infos if i.pid]
    cpu0 = sum(proc_cpu_s(p) for p in pids)
    await asyncio.sleep(idle_s)  # measuring idleness: nothing to wait for
    cpu = sum(proc_cpu_s(p) for p in pids) - cpu0
    return {
        "agents": len(pids),
        "rss_mb_per_slot": sum(rss_bytes(p) for p in pids) / len(pids) / 2**20,
        "cpu_pct_per_slot": 100 * cpu / idle_s / len(pids),
        "idle_s": idle_s,
    }


async def run(
    stored: list[int],
    clients: int,
    idle_s: float = 3.0,
    beaters: tuple[int, ...] = (10, 100, 1000),
    beat_s: float = 10.0,
) -> dict[str, Any]:
    out: dict[str, Any] = {"swarm_status": []}
    async with private_redis() as server, cfnd(server, NOOP) as daemon:
        async with AsyncClient(daemon.socket_path, timeout_s=120) as c:
            await c.call("swarm.init", topology="mesh", max_agents=8, name="bench")
            have = 0
            mem0 = server.used_memory()
            for n in sorted(stored):
                while have < n:  # bounded: ``have`` grows every round
                    batch = min(500, n - have)
                    await c.task_submit_many([{"text": "x", "type": "noop"}] * batch)
                    have += batch
                if n:  # at rest: the timings below must not share the machine with the work
                    await c.task_wait(all=True, timeout_s=max(600.0, n / 20))
                status_ms, monitor_ms = await timed(c) * 1e3, await monitor_poll(c) * 1e3
                out["swarm_status"].append({"tasks": n, "ms": status_ms, "monitor_ms": monitor_ms})
            if have:
                out["redis_bytes_per_task"] = (server.used_memory() - mem0) / have
            base = out["swarm_status"][0]
            for row in out["swarm_status"]:
                row["x_first"] = row["ms"] / base["ms"]
                row["monitor_x_first"] = row["monitor_ms"] / base["monitor_ms"]

        async def one_client() -> list[float]:
            async with AsyncClient(daemon.socket_path, timeout_s=60) as cc:
                samples = []
                for _ in range(20):
                    t0 = time.perf_counter()
                    await cc.ping()
                    samples.append(time.perf_counter() - t0)
                return samples

        per = await asyncio.gather(*(one_client() for _ in range(clients)))
        async with AsyncClient(daemon.socket_path, timeout_s=120) as c:
            out["idle_agent"] = await idle_agents(c, idle_s)
        flat = [s for xs in per for s in xs]
        out["concurrent_clients"] = {
            "clients": clients,
            "ping_p50_us": percentile(flat, 0.5) * 1e6,
            "ping_p99_us": percentile(flat, 0.99) * 1e6,
        }
    if beaters:
        async with private_redis() as server:
            out["heartbeaters"] = await heartbeats.run(server, list(beaters), beat_s)
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "| stored tasks | swarm.status ms | x 1st row | monitor poll ms | x 1st row |",
        "|---|---|---|---|---|",
    ]
    for row in res["swarm_status"]:
        lines.append(
            f"| {row['tasks']:,} | {row['ms']:.1f} | {row['x_first']:.2f}x "
            f"| {row['monitor_ms']:.1f} | {row['monitor_x_first']:.2f}x |"
        )
    if "redis_bytes_per_task" in res:
        per_task = res["redis_bytes_per_task"]
        lines.append(f"\nRedis bytes per stored (finished, result kept) task: {per_task:,.0f}")
    cc = res["concurrent_clients"]
    lines.append(
        f"\n{cc['clients']} concurrent socket clients, ping: p50 {cc['ping_p50_us']:,.0f} us, "
        f"p99 {cc['ping_p99_us']:,.0f} us"
    )
    ia = res["idle_agent"]
    lines.append(
        f"\nIdle cfn-agent (one slot per process, {ia['agents']:.0f} agents, "
        f"{ia['idle_s']:.0f} s): "
        f"{ia['rss_mb_per_slot']:.1f} MB RSS and {ia['cpu_pct_per_slot']:.2f}% of a core per slot"
    )
    if res.get("heartbeaters"):
        secs = res["heartbeaters"][0]["seconds"]
        lines.append(
            f"\nEmulated remote agents heartbeating at 1 Hz ({secs:.0f} s each; cfnd its own "
            "process; x 1st = ratio to the first row):\n"
        )
        lines.append(heartbeats.markdown(res["heartbeaters"]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stored", default="0,1000,10000,50000")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--heartbeaters", default="10,100,1000", help="'' to skip")
    parser.add_argument("--beat-s", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configure_logging("console", "warning")
    beaters = tuple(int(x) for x in args.heartbeaters.split(",") if x)
    res = run_loop(
        run([int(x) for x in args.stored.split(",")], args.clients, 3.0, beaters, args.beat_s)
    )
    print(markdown(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
