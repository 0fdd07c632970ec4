"""No-op task throughput: cfn (daemon + cfn-agent workers) vs a raw redis-py Streams queue.

    python bench/throughput.py [--tasks 2000] [--workers 4]

Both run side by side in one go against the same private redis-server (a Unix
socket in a temp dir, nothing else on it) and the ratio is printed. The raw
baseline is the floor of any Redis job queue: XADD one job at a time, workers
XREADGROUP + XACK; cfn does much more per task (task record, priorities,
assignment, events, stored result, retries), so the ratio shows its overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cfn_client.api import AsyncClient  # noqa: E402
from cfn_daemon.app import Daemon  # noqa: E402
from cfn_daemon.settings.runtime import ConfigManager  # noqa: E402


async def raw_streams(url: str, tasks: int, workers: int) -> float:
    """Jobs per second for XADD + XREADGROUP/XACK with ``workers`` consumers."""
    r = aioredis.from_url(url)
    stream, group = "bench:raw", "g"
    await r.delete(stream)
    await r.xgroup_create(stream, group, id="0", mkstream=True)
    done = 0
    finished = asyncio.Event()

    async def worker(n: int) -> None:
        nonlocal done
        c = aioredis.from_url(url)
        try:
            while not finished.is_set():
                reply = await c.xreadgroup(group, f"w{n}", {stream: ">"}, count=1, block=200)
                for _, entries in reply or []:
                    for eid, _ in entries:
                        await c.xack(stream, group, eid)
                        done += 1
                        if done >= tasks:
                            finished.set()
        finally:
            await c.aclose()

    start = time.perf_counter()
    consumers = [asyncio.create_task(worker(i)) for i in range(workers)]
    for i in range(tasks):
        await r.xadd(stream, {"job": i})
    await finished.wait()
    elapsed = time.perf_counter() - start
    await asyncio.gather(*consumers)
    await r.delete(stream)
    await r.aclose()
    return tasks / elapsed


async def cfn(url: str, tmp: Path, tasks: int, workers: int) -> float:
    """Tasks per second through cfnd and ``workers`` cfn-agent processes."""
    conf = tmp / "cfnd.toml"
    conf.write_text(
        '[agent_types.noop]\nkind = "python"\nentry = "examples.agents.noop:run"\nconcurrency = 8\n'
    )
    manager = ConfigManager(
        file=conf,
        env={},
        flags={
            "daemon.socket": str(tmp / "cfnd.sock"),
            "daemon.state_dir": str(tmp / "state"),
            "redis.url": url,
            "redis.key_prefix": "bench",
            "daemon.log_level": "warning",
        },
    )
    os.environ["PYTHONPATH"] = str(ROOT)  # the agents import examples.agents.noop
    async with Daemon(manager, env={}) as daemon:
        runner = asyncio.create_task(daemon.run())
        await daemon.ready.wait()
        async with AsyncClient(daemon.socket_path, timeout_s=300) as c:
            await c.call("swarm.init", topology="mesh", max_agents=max(2, workers), name="bench")
            await c.call("agent.create", type="noop", count=workers)
            warm = await c.call("task.submit", text="warm-up", type="noop")
            await c.call("task.wait", tasks=[warm.id], timeout_s=60)
            start = time.perf_counter()
            submitted = await asyncio.gather(
                *(c.call("task.submit", text=str(i), type="noop") for i in range(tasks))
            )
            await c.call("task.wait", tasks=[t.id for t in submitted], timeout_s=300)
            elapsed = time.perf_counter() - start
        daemon.request_stop()
        await runner
    return tasks / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cfn-bench-", dir="/tmp"))
    sock = tmp / "redis.sock"
    server = await asyncio.create_subprocess_exec(
        *[
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        url = f"unix://{sock}"
        for _ in range(100):  # bounded wait for the socket
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        raw = await raw_streams(url, args.tasks, args.workers)
        ours = await cfn(url, tmp, args.tasks, args.workers)
        print(f"tasks={args.tasks} workers={args.workers} (no-op work, one redis-server)")
        print(f"raw redis-py streams : {raw:8.0f} jobs/s")
        print(f"cfn (cfnd + agents)  : {ours:8.0f} tasks/s")
        print(f"ratio cfn / raw      : {ours / raw:8.2f}")
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
