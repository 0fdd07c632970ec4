"""Submit is idempotent per key (issue 9): a submit the client timed out on and retried
is queued, and run, once. Real cfnd, real Redis (frozen with SIGSTOP), real agents."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from cfn_client.api import AsyncClient
from cfn_client.api.sync import Client
from cfn_client.wire.errors import Conflict, InvalidArgs
from tests.conftest import DaemonFactory
from tests.redis_servers import RedisFactory
from tests.test_at_most_once import SLOW_LAPSE
from tests.test_swarm_integration import all_events, wait_idle, wait_tasks


async def test_a_timed_out_submit_retried_by_the_client_runs_once(
    redis_factory: RedisFactory, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    server = redis_factory()
    d = await daemon_factory(redis_url=server.url, **SLOW_LAPSE)
    marker = tmp_path / "runs"
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=2, name="idem")
        await cfn.call("agent.create", type="shell")
        await wait_idle(cfn, 1)
        assert server.pid is not None
        loop = asyncio.get_running_loop()
        async with AsyncClient(d.socket_path, timeout_s=0.5) as impatient:
            # Redis freezes: the first submit reaches it but its answer comes too late
            # for the client, which retries (same key) until one answer arrives.
            os.kill(server.pid, signal.SIGSTOP)
            thaw = loop.call_later(1.2, os.kill, server.pid, signal.SIGCONT)
            try:
                task = await impatient.task_submit(f"echo x >> {marker}", retries=8)
            finally:
                thaw.cancel()
                os.kill(server.pid, signal.SIGCONT)
        (final,) = await wait_tasks(cfn, [task.id])
        assert final.status == "succeeded"
        tasks = (await cfn.call("task.list")).tasks
        assert [t.id for t in tasks] == [task.id]
        queued = [e.data["task"] for e in await all_events(cfn, ["task.queued"])]
        assert queued == [task.id]
        assert marker.read_text().split() == ["x"]


async def test_a_repeated_key_returns_the_first_task(daemon_factory: DaemonFactory) -> None:
    d = await daemon_factory(**SLOW_LAPSE)
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=2, name="keys")
        first = await cfn.task_submit("echo one", idempotency_key="job-42")
        again = await cfn.task_submit("echo one", idempotency_key="job-42")
        assert again.id == first.id
        other = await cfn.task_submit("echo one")  # a new logical submit: a new key
        assert other.id != first.id
        with pytest.raises(Conflict, match="different text or type"):
            await cfn.task_submit("echo two", idempotency_key="job-42")
        with pytest.raises(InvalidArgs, match="idempotency_key"):
            await cfn.task_submit("echo one", idempotency_key="has spaces")
        queued = [e.data["task"] for e in await all_events(cfn, ["task.queued"])]
        assert sorted(queued) == sorted([first.id, other.id])
        swarm = (await cfn.call("swarm.list")).swarms[0].id
        ttl_ms = await d.store.redis.pttl(d.store.keys.idempotency(swarm, "job-42"))
        assert 0 < ttl_ms <= 86_400_000  # the mapping expires (tasks.idempotency_ttl_s)


async def test_the_blocking_client_retries_with_the_same_key(
    daemon_factory: DaemonFactory,
) -> None:
    d = await daemon_factory(**SLOW_LAPSE)

    def submit_twice() -> tuple[str, str]:
        with Client(d.socket_path, timeout_s=30) as cfn:
            cfn.swarm_init("mesh", 2, name="blocking")
            a = cfn.task_submit("echo b", idempotency_key="k1")
            b = cfn.task_submit("echo b", idempotency_key="k1")
            return a.id, b.id

    a, b = await asyncio.to_thread(submit_twice)
    assert a == b


async def test_a_client_picked_task_id_is_its_own_idempotency(
    daemon_factory: DaemonFactory,
) -> None:
    d = await daemon_factory(**SLOW_LAPSE)
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=2, name="ids")
        first = await cfn.call("task.submit", text="echo one", task_id="job-7")
        again = await cfn.call("task.submit", text="echo one", task_id="job-7")  # a retry
        assert first.id == again.id == "job-7"
        with pytest.raises(Conflict, match="task id 'job-7' was already used"):
            await cfn.call("task.submit", text="echo two", task_id="job-7")
        with pytest.raises(InvalidArgs, match="task_id"):
            await cfn.call("task.submit", text="echo one", task_id="no spaces please")
        queued = [e.data["task"] for e in await all_events(cfn, ["task.queued"])]
        assert queued == ["job-7"]
        # The Python client picks the id itself: no idempotency key is stored for it.
        picked = await cfn.task_submit("echo picked")
        assert picked.id.startswith("t")
        swarm = (await cfn.call("swarm.list")).swarms[0].id
        keys = [k async for k in d.store.redis.scan_iter(match=f"{d.store.keys.prefix}*idem*")]
        assert keys == []
        (done,) = await wait_tasks(cfn, [picked.id])
        assert (done.swarm, done.status) == (swarm, "succeeded")
