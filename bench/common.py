"""Shared bench helpers: a private redis-server per trial, cfnd in this process or as its
own process, CPU and RSS from /proc, Redis counters."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from cfn_client.api import AsyncClient
from cfn_daemon.app import Daemon
from cfn_daemon.settings.runtime import ConfigManager

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent  # agents import examples.agents from here


def proc_cpu_s(pid: int) -> float:
    """utime + stime of one live process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_S


def rss_bytes(pid: int) -> int:
    """Resident set size of one live process (0 if it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (one /proc scan)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry)] = int(stat[1])
    out: list[int] = []
    frontier = [pid]
    for _ in range(64):  # bounded depth
        nxt = [p for p, pp in parent.items() if pp in frontier]
        if not nxt:
            break
        out += nxt
        frontier = nxt
    return out


class CpuMeter:
    """CPU seconds of this process, its descendants and Redis between start() and stop()."""

    def __init__(self, redis_pid: int) -> None:
        self.redis_pid = redis_pid
        self.base: dict[int, float] = {}
        self.seen: dict[int, float] = {}

    def _sample(self) -> dict[int, float]:
        pids = [os.getpid(), self.redis_pid, *descendants(os.getpid())]
        return {p: proc_cpu_s(p) for p in set(pids)}

    def start(self) -> None:
        self.base = self._sample()

    def stop(self) -> float:
        now = self._sample()
        return sum(v - self.base.get(p, 0.0) for p, v in now.items())


@dataclass
class RedisServer:
    url: str
    pid: int
    tmp: Path

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def command_calls(self) -> int:
        with self.client() as r:
            stats = r.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")

    def used_memory(self) -> int:
        with self.client() as r:
            return int(r.info("memory")["used_memory"])


@asynccontextmanager
async def private_redis() -> AsyncIterator[RedisServer]:
    """A fresh redis-server on a Unix socket in a temp dir, stopped afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="cfn-bench-", dir="/tmp"))
    sock = tmp / "redis.sock"
    proc = await asyncio.create_subprocess_exec(
        "redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "",
        "--appendonly", "no", "--dir", str(tmp),
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():  # bounded by the deadline
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            await asyncio.sleep(0.01)
        server = RedisServer(f"unix://{sock}", proc.pid, tmp)
        for _ in range(500):  # bounded: until it answers PING
            try:
                with server.client() as r:
                    r.ping()
                break
            except redis.ConnectionError:
                await asyncio.sleep(0.01)
        yield server
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Trial:
    """One measured run of one system on one workload."""

    jobs: int
    elapsed_s: float
    cpu_s: float
    commands: int
    memory_bytes: int

    @property
    def rate(self) -> float:
        return self.jobs / self.elapsed_s


@dataclass
class Series:
    system: str
    workload: str
    trials: list[Trial] = field(default_factory=list)
    failed: int = 0  # trials that raised or ran out of time (see queues.run)

    def summary(self) -> dict[str, float | str | int]:
        if not self.trials:
            return {
                "system": self.system, "workload": self.workload, "reps": 0,
                "failed": self.failed, "jobs": 0, "jobs_per_s_median": 0.0,
                "jobs_per_s_min": 0.0, "jobs_per_s_max": 0.0, "cpu_s_per_1000": 0.0,
                "redis_cmds_per_job": 0.0, "redis_bytes_per_job": 0.0,
            }  # fmt: skip
        rates = [t.rate for t in self.trials]
        jobs = self.trials[0].jobs
        return {
            "system": self.system,
            "workload": self.workload,
            "reps": len(self.trials),
            "failed": self.failed,
            "jobs": jobs,
            "jobs_per_s_median": statistics.median(rates),
            "jobs_per_s_min": min(rates),
            "jobs_per_s_max": max(rates),
            "cpu_s_per_1000": statistics.median(t.cpu_s for t in self.trials) * 1000 / jobs,
            "redis_cmds_per_job": statistics.median(t.commands for t in self.trials) / jobs,
            "redis_bytes_per_job": statistics.median(t.memory_bytes for t in self.trials) / jobs,
        }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@asynccontextmanager
async def cfnd(server: RedisServer, config_toml: str, **flags: str) -> AsyncIterator[Daemon]:
    """cfnd in this process on ``server``'s private Redis, with ``config_toml`` (agent
    types), until the block ends; its agents import the repository's example agents."""
    conf = server.tmp / "cfnd.toml"
    conf.write_text(config_toml)
    manager = ConfigManager(
        file=conf,
        env={},
        flags={
            "daemon.socket": str(server.tmp / "cfnd.sock"),
            "daemon.state_dir": str(server.tmp / "state"),
            "redis.url": server.url,
            "redis.key_prefix": "bench",
            "metrics.listen": "127.0.0.1:0",  # another cfnd may hold the default port
            **flags,
        },
    )
    os.environ["PYTHONPATH"] = str(REPO)
    async with Daemon(manager, env={}) as daemon:
        runner = asyncio.create_task(daemon.run())
        await daemon.ready.wait()
        try:
            yield daemon
        finally:
            daemon.request_stop()
            await runner


@dataclass
class CfndProcess:
    """A real ``cfnd`` child process (its CPU and RSS are its own, not this process's)."""

    pid: int
    socket_path: Path


async def _answers(sock: Path) -> bool:
    try:
        async with AsyncClient(sock, timeout_s=5) as c:
            await c.ping()
    except Exception:
        return False
    return True


@asynccontextmanager
async def cfnd_process(server: RedisServer, config_toml: str = "") -> AsyncIterator[CfndProcess]:
    """The installed ``cfnd`` executable on ``server``'s private Redis (key prefix
    ``bench``) until the block ends, ready once it answers a ping (bounded wait)."""
    sock = server.tmp / "cfnd-proc.sock"
    conf = server.tmp / "cfnd-proc.toml"
    # /metrics on a free port: another cfnd on this machine may hold the default one.
    conf.write_text(
        f'[redis]\nkey_prefix = "bench"\n[metrics]\nlisten = "127.0.0.1:0"\n{config_toml}'
    )
    cmd = [
        str(Path(sys.executable).parent / "cfnd"), "--config", str(conf),
        "--socket", str(sock), "--state-dir", str(server.tmp / "state-proc"),
        "--redis-url", server.url, "--log-format", "json", "--log-level", "warning",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFN_")}
    env["PYTHONPATH"] = str(REPO)
    log = os.open(server.tmp / "cfnd-proc.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:  # bounded by the deadline: until it answers
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cfnd did not start; see {server.tmp / 'cfnd-proc.log'}")
            if sock.exists() and await _answers(sock):
                break
            await asyncio.sleep(0.05)
        yield CfndProcess(proc.pid, sock)
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        os.close(log)
