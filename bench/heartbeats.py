"""Emulated remote agents heartbeating at 1 Hz: cfnd's CPU and RSS, Redis ops/s.

Real ``cfn-agent`` processes cannot reach 1,000 on one machine, so one asyncio process
here plays them all, over Redis exactly as a remote ``cfn-agent`` does: each registers
with ``AgentRegistry.register`` (register.lua, as ``AgentRuntime._register``) and then,
once a second at its own phase, beats with ``AgentRegistry.heartbeat`` (heartbeat.lua)
and reads its work stream (the XREADGROUP an idle agent repeats; the real one blocks
1 s, this one does not block, so the Redis commands per second are the same). A swarm
holds at most 50 agents (``limits.max_agents_per_swarm``), so N agents fill
ceil(N / 50) swarms. cfnd is a separate process (``common.cfnd_process``): its CPU
(utime + stime from /proc) and RSS are its own.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any

import redis.asyncio as aredis

from bench.common import RedisServer, cfnd_process, proc_cpu_s, rss_bytes
from cfn_client.api import AsyncClient
from cfn_daemon.core.placement import AgentRecord
from cfn_daemon.queue.agents import AgentRegistry
from cfn_daemon.store.keys import AGENT_GROUP, Keys
from cfn_daemon.store.scripts import Scripts

PER_SWARM = 50  # limits.max_agents_per_swarm's ceiling
TYPES = '[agent_types.remote]\nkind = "python"\nentry = "examples.agents.noop:run"\n'


class Herd:
    """Emulated agents: registered, then beating once a second each until ``stop``."""

    def __init__(self, url: str, keys: Keys) -> None:
        # Beats wait for one of 64 connections (a remote agent has its own, 8 here share).
        pool = aredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=30)
        self.redis = aredis.Redis(connection_pool=pool)
        self.keys = keys
        self.registry = AgentRegistry(self.redis, keys, Scripts(self.redis))
        self.agents: list[tuple[str, str]] = []  # (swarm, agent)
        self.beats = 0
        self.missed = 0  # beats that came more than a second late
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def add(self, swarm: str, count: int) -> None:
        new: list[AgentRecord] = []
        for _ in range(count):
            i = len(self.agents) + len(new)
            record = AgentRecord(
                id=f"remote-{i:05d}", swarm=swarm, type="remote", role="implementer",
                status="idle", host="bench-emulated", pid=None, local=False,
                started_ms=int(time.time() * 1000),
            )  # fmt: skip
            new.append(record)
        for k in range(0, len(new), 50):  # bounded concurrency of the registrations
            await asyncio.gather(*(self.registry.register(a) for a in new[k : k + 50]))
        for a in new:
            self.agents.append((swarm, a.id))
            self._tasks.append(asyncio.create_task(self._beat(swarm, a.id)))

    async def _beat(self, swarm: str, agent: str) -> None:
        stream = self.keys.work(swarm, agent)
        due = time.monotonic() + random.random()  # spread the phases over the second
        while not self.stop.is_set():
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            late = time.monotonic() - due
            await self.registry.heartbeat(swarm, agent, None)
            await self.redis.xreadgroup(AGENT_GROUP, agent, {stream: ">"}, count=1)
            self.beats += 1
            self.missed += late > 1.0
            due += 1.0

    async def close(self) -> None:
        self.stop.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()


def _redis_commands(info: dict[str, Any]) -> int:
    return int(info["total_commands_processed"])


async def run(server: RedisServer, sizes: list[int], seconds: float) -> list[dict[str, Any]]:
    """One row per N (ascending; the herd grows between rows), each measured over
    ``seconds`` after the N agents all registered and beat for a second."""
    rows: list[dict[str, Any]] = []
    keys = Keys("bench")
    async with cfnd_process(server, TYPES) as cfnd, AsyncClient(cfnd.socket_path) as c:
        herd = Herd(server.url, keys)
        probe = aredis.Redis.from_url(server.url)
        swarms: list[str] = []
        try:
            for n in sorted(sizes):
                while len(herd.agents) < n:  # bounded: every round adds agents
                    if not swarms or sum(s == swarms[-1] for s, _ in herd.agents) >= PER_SWARM:
                        info = await c.swarm_init(
                            name=f"herd{len(swarms)}", topology="mesh", max_agents=PER_SWARM
                        )
                        swarms.append(info.id)
                    room = PER_SWARM - sum(s == swarms[-1] for s, _ in herd.agents)
                    await herd.add(swarms[-1], min(room, n - len(herd.agents)))
                await asyncio.sleep(1.1)  # every new agent beats once (phases < 1 s)
                cpu0, redis_cpu0 = proc_cpu_s(cfnd.pid), proc_cpu_s(server.pid)
                cmds0 = _redis_commands(await probe.info("stats"))
                beats0, missed0 = herd.beats, herd.missed
                t0 = time.monotonic()
                await asyncio.sleep(seconds)  # the measured window: steady state, nothing to await
                wall = time.monotonic() - t0
                beats, missed = herd.beats - beats0, herd.missed - missed0
                cpu, redis_cpu = proc_cpu_s(cfnd.pid) - cpu0, proc_cpu_s(server.pid) - redis_cpu0
                stats = await probe.info("stats")
                lost = 0
                for sid in swarms:
                    status = await c.swarm_status(sid)
                    lost += sum(1 for a in status.agents if a.status not in ("idle", "busy"))
                rows.append({
                    "agents": n,
                    "swarms": math.ceil(n / PER_SWARM),
                    "seconds": wall,
                    "beats_per_s": beats / wall,
                    "late_beats": missed,
                    "not_live": lost,
                    "cfnd_cpu_pct": 100 * cpu / wall,
                    "cfnd_rss_mb": rss_bytes(cfnd.pid) / 2**20,
                    "redis_cpu_pct": 100 * redis_cpu / wall,
                    "redis_ops_per_s": (_redis_commands(stats) - cmds0) / wall,
                    "redis_instantaneous_ops_per_sec": int(stats["instantaneous_ops_per_sec"]),
                })  # fmt: skip
        finally:
            await herd.close()
            await probe.aclose()
    first = rows[0]
    for row in rows:
        for key in ("cfnd_cpu_pct", "cfnd_rss_mb", "redis_ops_per_s"):
            row[f"{key}_x_first"] = row[key] / first[key] if first[key] else 0.0
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| agents at 1 Hz (swarms) | beats/s | cfnd CPU | x 1st | cfnd RSS MB | x 1st "
        "| Redis ops/s | x 1st | Redis CPU | not live |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['agents']:,} ({r['swarms']}) | {r['beats_per_s']:,.0f} "
            f"| {r['cfnd_cpu_pct']:.1f}% | {r['cfnd_cpu_pct_x_first']:.2f}x "
            f"| {r['cfnd_rss_mb']:.0f} | {r['cfnd_rss_mb_x_first']:.2f}x "
            f"| {r['redis_ops_per_s']:,.0f} | {r['redis_ops_per_s_x_first']:.2f}x "
            f"| {r['redis_cpu_pct']:.1f}% | {r['not_live']} |"
        )
    return "\n".join(lines)
