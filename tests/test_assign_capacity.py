"""assign.lua refuses an agent that is full: the dispatcher keeps its view of the agents
in memory (a hint, see swarm/dispatcher.py), so a stale view must never over-assign."""

from __future__ import annotations

from cfn_client.api import AsyncClient
from tests.conftest import DaemonFactory


async def test_a_full_agent_is_refused_and_the_entry_kept(daemon_factory: DaemonFactory) -> None:
    d = await daemon_factory()
    async with AsyncClient(d.socket_path, timeout_s=30) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=2, name="full")
    queue, keys, redis = d.swarms.tasks, d.store.keys, d.store.redis
    # No agent runs this type: only this test places the task.
    task = await queue.submit("full", text="echo x", type="nobody-runs-this")
    ((entry_id, _),) = await redis.xrange(keys.queue("full", "normal"))
    agent = keys.agent("full", "a1")
    await redis.hset(agent, mapping={"status": "busy", "load": 1, "concurrency": 1})
    placement = (task.id, entry_id.decode(), "normal", ["a1"], "")
    assert await queue.assign_many("full", [placement]) == [-2]
    assert (await queue.get("full", task.id)).status == "queued"
    assert int(await redis.hget(agent, "load")) == 1
    assert await redis.xlen(keys.work("full", "a1")) == 0
    # With room, the same entry is placed (it was kept, not acknowledged).
    await redis.hset(agent, mapping={"status": "idle", "load": 0})
    assert await queue.assign_many("full", [placement]) == [1]
    assert (await queue.get("full", task.id)).status == "assigned"
    assert int(await redis.hget(agent, "load")) == 1
    assert await redis.xlen(keys.work("full", "a1")) == 1
