"""Job-queue workloads on cfn and on raw redis-py baselines, interleaved, fresh Redis per trial.

    python bench/queues.py [--jobs 2000] [--reps 3] [--json FILE]

Workloads (one worker / one agent process, the producer enqueuing one job at a time,
timed from the first enqueue to the last result):

- ``noop``: no-op jobs; cfn through the ``python`` executor (examples.agents.noop),
  in both modes: ``arriving`` (the worker consumes while jobs arrive) and ``backlog``
  (every job queued before the worker starts);
- ``spawn``: ``true`` through cfn's ``shell`` executor against a bare asyncio
  subprocess loop spawning ``true``;
- ``noop, batched submit``: cfn only, consume while arriving, the producer sending
  ``task.submit_many`` chunks of ``BATCH`` tasks against one ``task.submit`` per job.

Each trial gets its own redis-server (Unix socket, temp dir); systems alternate
A/B/A/B within each repetition. Printed per system: jobs/s (median, min-max), CPU s
per 1,000 jobs (this process = producer + in-process cfnd, its children = agents,
and redis-server, from /proc), Redis commands per job (INFO commandstats) and Redis
bytes per stored job (used_memory growth), plus cfn's ratio to each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import CpuMeter, RedisServer, Series, Trial, cfnd, private_redis  # noqa: E402
from bench.peers import PEERS, peer_trial  # noqa: E402
from cfn_client.api import AsyncClient  # noqa: E402
from cfn_client.wire.schema.swarm import TaskSpec  # noqa: E402
from cfn_daemon.util.aio import run_loop  # noqa: E402
from cfn_daemon.util.logs import configure_logging  # noqa: E402

AGENT_TYPES = {
    "noop": '[agent_types.noop]\nkind = "python"\nentry = "examples.agents.noop:run"\n',
    "shell": '[agent_types.shell]\nkind = "shell"\n',
}


class Measure:
    """Counters around the timed section of one trial."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.cpu = CpuMeter(server.pid)

    def start(self) -> None:
        self.cmds0 = self.server.command_calls()
        self.mem0 = self.server.used_memory()
        self.cpu.start()
        self.t0 = time.perf_counter()

    def stop(self, jobs: int) -> Trial:
        elapsed = time.perf_counter() - self.t0
        cpu = self.cpu.stop()
        return Trial(
            jobs=jobs,
            elapsed_s=elapsed,
            cpu_s=cpu,
            commands=self.server.command_calls() - self.cmds0,
            memory_bytes=self.server.used_memory() - self.mem0,
        )


# ---- raw redis-py baselines -------------------------------------------------------


async def raw_streams(server: RedisServer, jobs: int, *, backlog: bool, pipelined: bool) -> Trial:
    """XADD (one at a time or pipelined) then one consumer doing XREADGROUP + XACK."""
    r = aioredis.from_url(server.url)
    c = aioredis.from_url(server.url)
    stream, group = "bench:raw", "g"
    await r.xgroup_create(stream, group, id="0", mkstream=True)
    m = Measure(server)
    done = 0

    async def consume() -> None:
        nonlocal done
        while done < jobs:  # bounded: each reply advances or the block times out
            reply = await c.xreadgroup(group, "w", {stream: ">"}, count=1, block=1000)
            for _, entries in reply or []:
                for eid, _ in entries:
                    await c.xack(stream, group, eid)
                    done += 1

    async def produce() -> None:
        if pipelined:
            async with r.pipeline(transaction=False) as p:
                for i in range(jobs):
                    p.xadd(stream, {"job": i})
                await p.execute()
        else:
            for i in range(jobs):
                await r.xadd(stream, {"job": i})

    m.start()
    if backlog:
        await produce()
        await consume()
    else:
        await asyncio.gather(consume(), produce())
    trial = m.stop(jobs)
    await r.aclose()
    await c.aclose()
    return trial


async def bare_spawn(server: RedisServer, jobs: int, *, backlog: bool) -> Trial:
    """``true`` spawned ``jobs`` times in a loop by asyncio (no queue at all)."""
    del backlog
    m = Measure(server)
    m.start()
    for _ in range(jobs):
        proc = await asyncio.create_subprocess_exec("true")
        await proc.wait()
    return m.stop(jobs)


# ---- cfn ----------------------------------------------------------------------------


BATCH = 100  # tasks per task.submit_many of the batched-submit workload


async def cfn_trial(
    server: RedisServer,
    jobs: int,
    *,
    backlog: bool,
    agent_type: str,
    batch: int = 0,
    dispatch: str = "direct",
) -> Trial:
    """cfnd in this process, one cfn-agent process of ``agent_type``; ``batch`` > 0:
    jobs submitted ``batch`` at a time (``task.submit_many``), else one by one;
    ``dispatch``: ``direct`` (the agent reads its type's streams) or ``routed`` (the
    dispatcher assigns every task)."""
    text = "true" if agent_type == "shell" else "x"
    flags = {"daemon.log_level": "warning", "tasks.dispatch": dispatch}
    async with (
        cfnd(server, AGENT_TYPES[agent_type], **flags) as daemon,
        AsyncClient(daemon.socket_path, timeout_s=600) as c,
    ):
        await c.call("swarm.init", topology="mesh", max_agents=2, name="bench")
        if not backlog:
            await c.call("agent.create", type=agent_type, count=1)
            warm = await c.task_submit(text, type=agent_type)
            await c.task_wait([warm.id], timeout_s=60)
        m = Measure(server)
        m.start()
        if batch:
            for start in range(0, jobs, batch):
                specs = [TaskSpec(text=text, type=agent_type)] * min(batch, jobs - start)
                await c.task_submit_many(specs)
        else:
            for _ in range(jobs):
                await c.task_submit(text, type=agent_type)
        if backlog:
            await c.call("agent.create", type=agent_type, count=1)
        result = await c.task_wait(all=True, timeout_s=600)
        trial = m.stop(jobs)
        bad = {k: v for k, v in result.counts.items() if k != "succeeded" and v}
        if bad:
            raise RuntimeError(f"cfn tasks did not all succeed: {result.counts}")
    return trial


Runner = Callable[[RedisServer, int], Awaitable[Trial]]


def systems(workload: str, backlog: bool) -> dict[str, Runner]:
    if workload == "noop, batched submit":  # the batched one first: the ratios are to it
        return {
            "cfn, 1 agent, no-op, batched submit": lambda s, n: cfn_trial(
                s, n, backlog=backlog, agent_type="noop", batch=BATCH
            ),
            "cfn, 1 agent, no-op": lambda s, n: cfn_trial(s, n, backlog=backlog, agent_type="noop"),
        }
    if workload == "spawn":
        return {
            "asyncio subprocess loop": lambda s, n: bare_spawn(s, n, backlog=backlog),
            "cfn, shell `true`": lambda s, n: cfn_trial(s, n, backlog=backlog, agent_type="shell"),
        }
    return {
        "raw redis-py (XADD, XREADGROUP+XACK)": lambda s, n: raw_streams(
            s, n, backlog=backlog, pipelined=False
        ),
        "raw, XADD pipelined": lambda s, n: raw_streams(s, n, backlog=backlog, pipelined=True),
        **{
            peer: (lambda s, n, peer=peer: peer_trial(peer, s, n, backlog=backlog))
            for peer in PEERS
        },
        "cfn, 1 agent, no-op": lambda s, n: cfn_trial(s, n, backlog=backlog, agent_type="noop"),
        "cfn, 1 agent, no-op, routed": lambda s, n: cfn_trial(
            s, n, backlog=backlog, agent_type="noop", dispatch="routed"
        ),
    }


async def _trial(series: Series, runner: Runner, jobs: int) -> None:
    """One trial on a fresh Redis; one that fails or hangs (a peer's worker that never
    reports its last job) is counted as failed and the rest of the bench goes on."""
    try:
        async with private_redis() as server, asyncio.timeout(max(120.0, jobs / 5)):
            series.trials.append(await runner(server, jobs))
    except Exception as exc:  # a TimeoutError included
        series.failed += 1
        print(f"bench: {series.system} ({series.workload}) trial failed: {exc!r}", file=sys.stderr)


async def run(
    jobs: int, reps: int, spawn_jobs: int, only: list[str] | None = None
) -> list[dict[str, float | str | int]]:
    """Every workload on every system (``only``: the systems whose name contains one of
    these words, cfn always included)."""
    plans = [
        ("noop", False, jobs),
        ("noop", True, jobs),
        ("noop, batched submit", False, jobs),
        ("spawn", False, spawn_jobs),
    ]
    out: list[dict[str, float | str | int]] = []
    for workload, backlog, n in plans:
        if n <= 0:
            continue
        label = f"{workload}, {'backlog first' if backlog else 'consume while arriving'}"
        table = {
            name: runner
            for name, runner in systems(workload, backlog).items()
            if only is None or name.startswith("cfn") or any(w in name for w in only)
        }
        series = {name: Series(name, label) for name in table}
        for _ in range(reps):  # interleaved A/B/A/B
            for name, runner in table.items():
                await _trial(series[name], runner, n)
        rows = [s.summary() for s in series.values()]
        cfn = next(r for r in rows if str(r["system"]).startswith("cfn"))
        for r in rows:
            rate = float(r["jobs_per_s_median"])
            r["cfn_ratio"] = float(cfn["jobs_per_s_median"]) / rate if rate else 0.0
        out += rows
    return out


def markdown(rows: list[dict[str, float | str | int]]) -> str:
    lines = [
        "| workload | system | jobs/s median (min-max) | CPU s / 1k jobs | Redis cmds/job "
        "| Redis B/job | cfn ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r["reps"]:
            lines.append(f"| {r['workload']} | {r['system']} | failed | | | | |")
            continue
        lines.append(
            f"| {r['workload']} | {r['system']} | {r['jobs_per_s_median']:,.0f} "
            f"({r['jobs_per_s_min']:,.0f}-{r['jobs_per_s_max']:,.0f}) "
            f"| {r['cpu_s_per_1000']:.2f} | {r['redis_cmds_per_job']:.1f} "
            f"| {r['redis_bytes_per_job']:,.0f} | {r['cfn_ratio']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--spawn-jobs", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--systems",
        help="comma-separated words: only the systems whose name contains one (cfn is "
        "always run), e.g. --systems saq; --spawn-jobs 0 skips the spawn workload",
    )
    args = parser.parse_args()
    configure_logging("console", "warning")
    only = args.systems.split(",") if args.systems else None
    rows = run_loop(run(args.jobs, args.reps, args.spawn_jobs, only))
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
