"""Peer job queues (taskiq-redis, arq, saq, streaq) for bench/queues.py: worker + producer.

The worker runs in its own process (``python bench/peers.py SYSTEM URL JOBS``), like
a cfn-agent; the job counts in memory and the ``JOBS``-th RPUSHes ``bench:done`` once
(no per-job overhead), which the producer BLPOPs. At startup it RPUSHes ``bench:ready``.
Tuning: arq polls every 10 ms (default 0.5 s); saq and streaq with their defaults
(streaq: results kept, as cfn keeps every result).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import redis as redis_sync
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import RedisServer, Trial  # noqa: E402

PEERS = ("taskiq-redis", "arq", "saq", "streaq")


def _socket(url: str) -> str:
    return url.removeprefix("unix://")


class Counter:
    def __init__(self, url: str, jobs: int) -> None:
        self.r = redis_sync.Redis.from_url(url)
        self.jobs = jobs
        self.done = 0

    def tick(self) -> None:
        self.done += 1
        if self.done == self.jobs:
            self.r.rpush("bench:done", 1)


COUNTER: Counter | None = None


async def noop(ctx: Any) -> None:
    """The job: nothing, except counting (in memory) towards the one RPUSH at the end."""
    if COUNTER is not None:
        COUNTER.tick()


def taskiq_broker(url: str) -> Any:
    """A RedisStreamBroker with results stored in Redis, and the no-op task."""
    from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

    broker = RedisStreamBroker(url, consumer_id="0").with_result_backend(
        RedisAsyncResultBackend(url)
    )
    broker.task(task_name="noop")(noop_taskiq)
    return broker


async def noop_taskiq() -> None:
    await noop(None)


def streaq_worker(url: str) -> tuple[Any, Any]:
    """A streaq Worker on the bench's queue and its registered no-op task (the producer
    needs the same registration to enqueue it)."""
    from streaq import Worker

    w = Worker(redis_url=url, queue_name="bench", handle_signals=True)

    async def noop_streaq() -> None:
        await noop(None)

    return w, w.task(name="noop")(noop_streaq)


def worker(system: str, url: str, jobs: int) -> None:
    global COUNTER
    counter = COUNTER = Counter(url, jobs)
    if system == "taskiq-redis":
        from taskiq.receiver import Receiver

        async def run_taskiq() -> None:
            broker = taskiq_broker(url)
            await broker.startup()
            counter.r.rpush("bench:ready", 1)
            await Receiver(broker, run_startup=False).listen(asyncio.Event())

        asyncio.run(run_taskiq())
    elif system == "arq":
        from arq.connections import RedisSettings
        from arq.worker import Worker

        async def startup(ctx: Any) -> None:
            counter.r.rpush("bench:ready", 1)

        w = Worker(
            functions=[noop],  # type: ignore[list-item]
            redis_settings=RedisSettings(unix_socket_path=_socket(url)),
            poll_delay=0.01,
            on_startup=startup,
            log_results=False,
        )
        w.run()
    elif system == "streaq":
        w, _ = streaq_worker(url)
        counter.r.rpush("bench:ready", 1)
        w.run_sync()
    else:
        from saq import Worker as SaqWorker
        from saq.queue.redis import RedisQueue

        async def main() -> None:
            queue = RedisQueue(aioredis.from_url(url))
            w = SaqWorker(queue, functions=[noop])
            counter.r.rpush("bench:ready", 1)
            await w.start()

        asyncio.run(main())


async def peer_trial(system: str, server: RedisServer, jobs: int, *, backlog: bool) -> Trial:
    from bench.queues import Measure

    # No socket timeout (redis-py's default is 5 s): a loaded run's BLPOP waits longer.
    r = aioredis.from_url(server.url, socket_timeout=None)
    if system == "taskiq-redis":
        broker = taskiq_broker(server.url)
        await broker.startup()
        task = broker.find_task("noop")

        async def enqueue() -> None:
            await task.kiq()

    elif system == "arq":
        from arq import create_pool
        from arq.connections import RedisSettings

        pool = await create_pool(RedisSettings(unix_socket_path=_socket(server.url)))

        async def enqueue() -> None:
            await pool.enqueue_job("noop")

    elif system == "streaq":
        producer, streaq_task = streaq_worker(server.url)
        await producer.__aenter__()

        async def enqueue() -> None:
            await streaq_task.enqueue()

    else:
        from saq.queue.redis import RedisQueue

        queue = RedisQueue(aioredis.from_url(server.url))
        await queue.connect()

        async def enqueue() -> None:
            await queue.enqueue("noop")

    async def spawn() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, __file__, system, server.url, str(jobs),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    proc = None
    try:
        if not backlog:
            proc = await spawn()
            await r.blpop(["bench:ready"], timeout=60)
        m = Measure(server)
        m.start()
        for _ in range(jobs):
            await enqueue()
        if backlog:
            proc = await spawn()
        if await r.blpop(["bench:done"], timeout=600) is None:
            raise RuntimeError(f"{system}: the worker did not finish")
        trial = m.stop(jobs)
    finally:  # also when the trial is cancelled (queues._trial's time bound)
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await r.aclose()
    if system == "taskiq-redis":
        await broker.shutdown()
    elif system == "arq":
        await pool.aclose()
    elif system == "streaq":
        await producer.__aexit__(None, None, None)
    else:
        await queue.disconnect()
    return trial


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
