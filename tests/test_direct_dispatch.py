"""Direct dispatch (``[tasks] dispatch = "direct"``, queue/direct.py): agents read their
type's streams themselves. The swarm tests that hold for any dispatch run again here
under it (real cfnd, cfn-agent processes, redis-server), plus what is its own: no
assignment step, entries a dead agent had read given back, surplus reads given back,
and the depth of what nobody has read yet."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from cfn_client.api import AsyncClient
from cfn_daemon.agent.intake import Intake
from cfn_daemon.app import Daemon
from cfn_daemon.core.placement import AgentRecord
from cfn_daemon.queue import direct
from cfn_daemon.queue.agents import AgentRegistry
from cfn_daemon.queue.tasks import TaskQueue
from cfn_daemon.store.keys import AGENT_GROUP, Keys
from cfn_daemon.store.scripts import Scripts
from cfn_daemon.swarm.dispatcher import ensure_groups as ensure_routed_groups
from tests.conftest import SHARED_REDIS, DaemonFactory
from tests.test_swarm_integration import (  # run again below, under direct dispatch
    FAST,
    all_events,
    cfn,
    test_balanced_strategy_prefers_the_least_loaded_agent,
    test_cancel_stops_a_running_task,
    test_failing_task_retries_with_backoff_then_dead_letters,
    test_killed_agent_task_is_redelivered_once,
    test_lapsed_remote_agent_is_marked_lost_and_its_task_requeued,
    test_priorities_high_before_low,
    test_scale_up_and_down_never_stops_a_busy_agent_without_force,
    test_slow_heartbeating_agent_keeps_its_task,
    test_task_clean_and_several_swarms,
    wait_tasks,
)

__all__ = [
    "cfn",  # its `d` is this module's: the daemon runs with direct dispatch
    "test_balanced_strategy_prefers_the_least_loaded_agent",
    "test_cancel_stops_a_running_task",
    "test_failing_task_retries_with_backoff_then_dead_letters",
    "test_killed_agent_task_is_redelivered_once",
    "test_lapsed_remote_agent_is_marked_lost_and_its_task_requeued",
    "test_priorities_high_before_low",
    "test_scale_up_and_down_never_stops_a_busy_agent_without_force",
    "test_slow_heartbeating_agent_keeps_its_task",
    "test_task_clean_and_several_swarms",
]

DIRECT = {**FAST, "tasks.dispatch": "direct"}


@pytest.fixture
async def d(daemon_factory: DaemonFactory) -> Daemon:
    return await daemon_factory(**DIRECT)


async def test_200_tasks_run_exactly_once_with_no_assignment_step(
    d: Daemon, cfn: AsyncClient, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    await cfn.call("swarm.init", topology="mesh", max_agents=4, name="crowd")
    await cfn.call("agent.create", type="shell", count=3)
    ids = [
        (await cfn.call("task.submit", text=f"echo $CFN_TASK_ID >> {log}; echo out-{i}")).id
        for i in range(200)
    ]
    tasks = await wait_tasks(cfn, ids)
    assert [t.status for t in tasks] == ["succeeded"] * 200
    assert {t.result.output.strip() for t in tasks} == {f"out-{i}" for i in range(200)}
    assert max(Counter(log.read_text().split()).values()) == 1  # none ran twice
    done = Counter(e.data["task"] for e in await all_events(cfn, ["task.succeeded"]))
    assert done == Counter(ids)  # one result per task
    assert not await all_events(cfn, ["task.assigned"])  # the dispatcher never saw them
    assert len({t.agent for t in tasks}) >= 2  # read by more than one agent
    for a in (await cfn.call("agent.list")).agents:  # every place of the load given back
        assert int(await d.store.redis.hget(d.store.keys.agent("crowd", a.id), "load")) == 0


async def test_routed_topologies_keep_the_dispatcher(cfn: AsyncClient) -> None:
    await cfn.call("swarm.init", topology="star", max_agents=3, name="routed")
    await cfn.call("agent.create", type="shell", count=2)
    task = await cfn.call("task.submit", text="echo hub")
    (final,) = await wait_tasks(cfn, [task.id])
    assert final.status == "succeeded"
    assigned = await all_events(cfn, ["task.assigned"])
    assert [e.data["task"] for e in assigned] == [task.id]


async def test_unread_direct_work_counts_in_the_queue_depth(d: Daemon, cfn: AsyncClient) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=2, name="depth")
    (agent,) = (await cfn.call("agent.create", type="shell")).agents
    first = await cfn.call("task.submit", text="true")
    assert (await wait_tasks(cfn, [first.id]))[0].status == "succeeded"
    assert agent.pid is not None
    os.kill(agent.pid, signal.SIGSTOP)  # nobody reads now
    try:
        ids = [(await cfn.call("task.submit", text="true", priority="high")).id for _ in range(3)]
        status = await cfn.call("swarm.status")
        # The frozen agent's blocking read, already in Redis, may still take the first.
        assert status.queues["high"] in (2, 3)
        assert status.tasks["queued"] == 3
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    assert [t.status for t in await wait_tasks(cfn, ids)] == ["succeeded"] * 3
    assert (await cfn.call("swarm.status")).queues["high"] == 0


# ---------------------------------------------------------------- the scripts alone


class Q:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis, self.keys = redis, keys
        scripts = Scripts(redis)
        self.tasks = TaskQueue(redis, keys, scripts)
        self.registry = AgentRegistry(redis, keys, scripts)

    async def agent(self, agent_id: str) -> None:
        await self.registry.register(
            AgentRecord(id=agent_id, swarm="s", type="impl", role="implementer", status="idle")
        )

    async def read(self, agent_id: str, priority: str = "normal") -> str:
        stream = self.keys.direct("s", "impl", priority)
        ((_, entries),) = await self.redis.xreadgroup(AGENT_GROUP, agent_id, {stream: ">"})
        return str(entries[0][0].decode())

    async def lag(self, priority: str = "normal") -> int:
        return (await direct.depths(self.redis, self.keys, "s", ["impl"]))[priority]


@pytest.fixture
async def q(key_prefix: str) -> AsyncIterator[Q]:
    redis = aioredis.from_url(SHARED_REDIS)
    keys = Keys(key_prefix)
    await direct.ensure_groups(redis, keys, "s", "impl")
    await ensure_routed_groups(redis, [keys.queue("s", p) for p in ("high", "normal", "low")])
    try:
        yield Q(redis, keys)
    finally:
        async for key in redis.scan_iter(match=f"{key_prefix}:*"):
            await redis.delete(key)
        await redis.aclose()


async def test_a_dead_agents_unstarted_entry_goes_back_on_its_stream(q: Q) -> None:
    await q.agent("ghost")
    await q.tasks.submit("s", text="x", type="impl", task_id="t1", direct=True)
    await q.read("ghost")  # read, then the agent died before starting it
    assert await q.lag() == 0
    assert await q.tasks.reclaim_agent("s", "ghost") == ["t1"]
    assert await q.lag() == 1  # for any other agent of the type
    stream = q.keys.direct("s", "impl", "normal")
    assert (await q.redis.xpending(stream, AGENT_GROUP))["pending"] == 0
    assert (await q.tasks.get("s", "t1")).status == "queued"


async def test_a_dead_agents_running_task_is_requeued_as_agent_lost(q: Q) -> None:
    await q.agent("ghost")
    await q.tasks.submit("s", text="x", type="impl", task_id="t2", direct=True)
    entry = await q.read("ghost")
    stream = q.keys.direct("s", "impl", "normal")
    started = await q.tasks.start(
        "s", "t2", "ghost", incarnation="i1", entry_id=entry, stream=stream
    )
    assert not isinstance(started, str) and started.status == "running"
    assert started.agent == "ghost" and started.attempts == 1
    load = await q.redis.hget(q.keys.agent("s", "ghost"), "load")
    assert int(load) == 1  # a direct start takes its place of the load
    assert await q.tasks.reclaim_agent("s", "ghost") == ["t2"]
    task = await q.tasks.get("s", "t2")
    assert (task.status, task.agent) == ("queued", None)
    # Back on the routed queue (retries and requeues go past the dispatcher), once.
    assert await q.redis.xlen(q.keys.queue("s", "normal")) == 1
    assert await q.lag() == 0 and await q.redis.xlen(stream) == 0


async def test_a_direct_task_cancelled_before_its_start_is_skipped_without_load(q: Q) -> None:
    await q.agent("a1")
    await q.tasks.submit("s", text="x", type="impl", task_id="t3", direct=True)
    entry = await q.read("a1")
    await q.tasks.cancel("s", "t3")
    stream = q.keys.direct("s", "impl", "normal")
    assert (
        await q.tasks.start("s", "t3", "a1", incarnation="i1", entry_id=entry, stream=stream)
        == "cancelled"
    )
    assert int(await q.redis.hget(q.keys.agent("s", "a1"), "load") or 0) == 0
    assert await q.redis.xlen(stream) == 0  # acknowledged and deleted


async def test_a_read_beyond_the_free_slots_is_given_back(q: Q) -> None:
    await q.agent("a1")
    for tid, prio in (("low1", "low"), ("norm1", "normal"), ("high1", "high")):
        await q.tasks.submit("s", text="x", type="impl", task_id=tid, priority=prio, direct=True)
    intake = Intake(q.redis, "a1", [q.keys.work("s", "a1"), *direct.streams(q.keys, "s", "impl")])
    got: list[tuple[str, str, str]] = []
    for _ in range(len(intake.streams) + 1):  # our (empty) pending lists first, then live
        got = await intake.read(1)
        if got:
            break
    assert [tid for _, _, tid in got] == ["high1"]  # one slot: the highest priority
    assert await q.lag("normal") == 1 and await q.lag("low") == 1  # the rest given back
    nxt = await intake.read(1)
    assert [tid for _, _, tid in nxt] == ["norm1"]
