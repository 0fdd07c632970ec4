"""Latency: socket round trips, submit->start and submit->result, a consensus round's
close after its last vote, killed-agent detection, whole-process CLI vs `python -c pass`.

    python bench/latency.py [--n 500] [--cli-n 10] [--validators 3,7,15] [--rounds 5]
                            [--json FILE]

cfnd runs in this process against a private redis-server (Unix socket, temp dir)
with one idle no-op agent. submit->start: from just before ``task.submit`` (this
process's clock) to the ``started_ms`` the agent's start.lua stored in the task's
record (same machine, same clock; 1 ms resolution). Round close: CFN runs of one
instant implementer and N instant validators (bench/instant.py), each from the
Redis time of the round's last vote (its vote-stream entry id) to the Redis time of
the round's ``loop.round`` event (its event-stream entry id): both stamped by the
same Redis, 1 ms resolution.
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

import msgspec  # noqa: E402
import redis.asyncio as aredis  # noqa: E402

from bench.common import cfnd, percentile, private_redis  # noqa: E402
from cfn_client.api import AsyncClient  # noqa: E402
from cfn_daemon.store.keys import Keys  # noqa: E402
from cfn_daemon.util.aio import run_loop  # noqa: E402
from cfn_daemon.util.logs import configure_logging  # noqa: E402

NOOP = '[agent_types.noop]\nkind = "python"\nentry = "examples.agents.noop:run"\n'
INSTANT = (
    '[agent_types.impl]\nkind = "python"\nentry = "bench.instant:implement"\n'
    'role = "implementer"\n'
    '[agent_types.approve]\nkind = "python"\nentry = "bench.instant:approve"\n'
    'role = "validator"\n'
)
KEYS = Keys("bench")  # common.cfnd's key prefix


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


def stats_ms(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(samples, 0.5),
        "p99_ms": percentile(samples, 0.99),
        "samples": len(samples),
    }


def _ms(entry_id: bytes) -> int:
    """The Redis time (ms) in a stream entry id."""
    return int(entry_id.split(b"-")[0])


async def _one_run(c: AsyncClient, r: Any, swarm: str, n: int, label: str) -> float:
    """One CFN run with ``n`` instant validators: ms from its last vote to its decision."""
    info = await c.call("loop.start", task=label, implementers=["impl"], validators=["approve"] * n)
    async with c.stream("loop.follow", {"run": info.id}) as events:
        async for _ in events:
            pass
    done = await c.call("loop.status", run=info.id)
    if done.status != "done" or done.loop2_round != 1:
        raise RuntimeError(f"loop run ended {done.status} in round {done.loop2_round}")
    votes = await r.xrange(KEYS.votes(swarm, info.id, 1))
    last_vote = max(_ms(eid) for eid, _ in votes)
    for eid, fields in await r.xrange(KEYS.events(swarm), min=f"{last_vote}-0"):
        data = msgspec.json.decode(fields.get(b"data", b"{}"))
        if fields.get(b"type") == b"loop.round" and data.get("run") == info.id:
            if len(votes) != n:
                raise RuntimeError(f"run {info.id}: {len(votes)} votes of {n}")
            return float(_ms(eid) - last_vote)
    raise RuntimeError(f"run {info.id}: no loop.round event after its last vote")


async def round_close(validators: list[int], rounds: int) -> list[dict[str, Any]]:
    """Per N validators: ``rounds`` CFN runs (after one that starts the agents), each
    timed from the round's last vote to its ``loop.round`` event (the decision)."""
    out = []
    async with (
        private_redis() as server,
        cfnd(server, INSTANT) as daemon,
        AsyncClient(daemon.socket_path, timeout_s=120) as c,
    ):
        r = aredis.Redis.from_url(server.url)
        size = max(validators) + 2
        swarm = (await c.swarm_init(topology="mesh", max_agents=size, name="rounds")).id
        try:
            for n in validators:
                await _one_run(c, r, swarm, n, f"warm-up {n}")  # starts the new agents
                samples = [await _one_run(c, r, swarm, n, f"{n} #{i}") for i in range(rounds)]
                out.append({"validators": n, **stats_ms(samples)})
        finally:
            await r.aclose()
    return out


async def run(
    n: int, cli_n: int, validators: tuple[int, ...] = (3, 7, 15), rounds: int = 5
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with private_redis() as server, cfnd(server, NOOP) as daemon:
        async with AsyncClient(daemon.socket_path, timeout_s=60) as c:
            await c.call("swarm.init", topology="mesh", max_agents=2, name="bench")
            await c.call("agent.create", type="noop", count=1)
            first = await c.task_submit("x", type="noop")
            await c.task_wait([first.id], timeout_s=60)
            pings, statuses, starts, to_start = [], [], [], []
            for _ in range(n):
                t0 = time.perf_counter()
                await c.ping()
                pings.append(time.perf_counter() - t0)
            for _ in range(n):
                t0 = time.perf_counter()
                await c.task_status(first.id)
                statuses.append(time.perf_counter() - t0)
            r = aredis.Redis.from_url(server.url)
            for _ in range(max(5, n // 20)):  # idle agent: one at a time
                wall0, t0 = time.time(), time.perf_counter()
                t = await c.task_submit("x", type="noop")
                await c.task_wait([t.id], timeout_s=60)
                starts.append(time.perf_counter() - t0)
                started = await r.hget(KEYS.task(first.swarm, t.id), "started_ms")
                if started is None:
                    raise RuntimeError(f"task {t.id} has no started_ms")
                to_start.append(int(started) - wall0 * 1e3)
            await r.aclose()
            out["ping"] = stats_us(pings)
            out["task.status"] = stats_us(statuses)
            out["submit_to_result"] = stats_us(starts)
            out["submit_to_start"] = stats_ms(to_start)
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
    if validators:
        out["round_close"] = await round_close(list(validators), rounds)
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = ["| measure | p50 | p99 |", "|---|---|---|"]
    for key in ("ping", "task.status", "submit_to_result"):
        if res.get(key):
            lines.append(f"| {key} | {res[key]['p50_us']:,.0f} us | {res[key]['p99_us']:,.0f} us |")
    if res.get("submit_to_start"):
        st = res["submit_to_start"]
        lines.append(
            f"| submit -> started (idle agent; ms clock) | {st['p50_ms']:.1f} ms "
            f"| {st['p99_ms']:.1f} ms |"
        )
    for rc in res.get("round_close", []):
        lines.append(
            f"| consensus round, last vote -> decision, {rc['validators']} validators "
            f"({rc['samples']} runs; ms clock) | {rc['p50_ms']:.0f} ms | {rc['p99_ms']:.0f} ms |"
        )
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
    parser.add_argument("--validators", default="3,7,15", help="'' to skip the rounds")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per validator count")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configure_logging("console", "warning")
    validators = tuple(int(x) for x in args.validators.split(",") if x)
    res = run_loop(run(args.n, args.cli_n, validators, args.rounds))
    print(markdown(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
