"""Signed task results (core/seals.py, cfnloop/trusted.py) on the real scripts and a
real Redis: what the CFN loop accepts, and every forged or replayed result it refuses.

The tasks go through submit / assign / start / complete exactly as an agent's do; the
attacker is whoever else writes Redis.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from cfn_client.api import AsyncClient
from cfn_client.wire.schema.swarm import TaskResult
from cfn_daemon.cfnloop.trusted import TrustedResults
from cfn_daemon.core.placement import AgentRecord
from cfn_daemon.core.run_records import impl_task_id
from cfn_daemon.core.seals import result_message
from cfn_daemon.queue.agents import AgentRegistry
from cfn_daemon.queue.events import history
from cfn_daemon.queue.tasks import Retry, TaskQueue
from cfn_daemon.store.keys import AGENT_GROUP, Keys
from cfn_daemon.store.scripts import Scripts
from cfn_daemon.swarm.dispatcher import ensure_groups
from cfn_daemon.swarm.keyring import KeyRing
from cfn_daemon.util.signing import Signer
from tests.conftest import SHARED_REDIS, DaemonFactory
from tests.test_loop_integration import EXAMPLES, FAST
from tests.test_swarm_integration import next_event

SWARM = "s"


@dataclass
class World:
    redis: Any
    keys: Keys
    tasks: TaskQueue
    registry: AgentRegistry
    keyring: KeyRing
    trusted: TrustedResults

    async def finish(
        self,
        tid: str,
        agent: str,
        signer: Signer | None,
        *,
        target: str | None = None,
        ok: bool = True,
        incarnation: str = "inc-1",
        output: str = "done",
    ) -> None:
        """Submit ``tid`` (pinned to ``target``), deliver it to ``agent``, start and
        complete it as that agent's process would, sealed by ``signer``."""
        await self.registry.register(
            AgentRecord(
                id=agent, swarm=SWARM, type="impl", role="implementer", status="idle",
                slot="" if target in (None, agent) else target,
            )
        )  # fmt: skip
        await self.tasks.submit(
            SWARM, text="work", type="impl", task_id=tid, target=target or agent, max_attempts=3
        )
        queue = self.keys.queue(SWARM, "normal")
        ((_, entries),) = await self.redis.xreadgroup("dispatch", "cfnd", {queue: ">"}, count=1)
        assert await self.tasks.assign_many(
            SWARM, [(tid, entries[0][0].decode(), "normal", [agent], "")]
        ) == [1]
        work = self.keys.work(SWARM, agent)
        ((_, delivered),) = await self.redis.xreadgroup(AGENT_GROUP, agent, {work: ">"})
        entry = delivered[0][0].decode()
        task = await self.tasks.start(SWARM, tid, agent, incarnation=incarnation, entry_id=entry)
        assert not isinstance(task, str), task
        result = TaskResult(
            ok=ok, agent=agent, attempt=task.attempts, output=output, confidence=1.0
        )

        def seal(stored: bytes) -> str:
            assert signer is not None
            msg = result_message(SWARM, tid, result.attempt, incarnation, agent, ok, stored)
            return signer.sign(msg)

        await self.tasks.complete(
            SWARM, tid, agent, entry, result, Retry(), seal=seal if signer else None
        )

    async def read(self, tid: str) -> Any:
        tasks = await self.trusted.get_many(SWARM, [tid])
        return tasks[0] if tasks else None

    async def rejections(self) -> collections.Counter[tuple[str, str]]:
        events = await history(
            self.redis, self.keys, SWARM, since_ms=None, types=["security"], limit=1000
        )
        return collections.Counter(
            (e.data["task"], e.data["reason"])
            for e in events
            if e.type == "security.result_rejected"
        )


@pytest.fixture
async def world(key_prefix: str, tmp_path: Path) -> AsyncIterator[World]:
    redis = aioredis.from_url(SHARED_REDIS)
    keys, scripts = Keys(key_prefix), Scripts(redis)
    keyring = KeyRing(tmp_path)
    await ensure_groups(redis, [keys.queue(SWARM, "normal")])
    try:
        yield World(
            redis,
            keys,
            TaskQueue(redis, keys, scripts),
            AgentRegistry(redis, keys, scripts),
            keyring,
            TrustedResults(redis, keys, keyring),
        )
    finally:
        async for key in redis.scan_iter(match=f"{key_prefix}:*"):
            await redis.delete(key)
        await redis.aclose()


def local(world: World, agent: str) -> Signer:
    """A local agent: its key pinned from its pipe."""
    signer = Signer()
    assert world.keyring.pin(SWARM, agent, signer.public, replace=True)
    return signer


async def test_a_sealed_result_is_trusted(world: World) -> None:
    await world.finish("t1", "a1", local(world, "a1"))
    task = await world.read("t1")
    assert task.status == "succeeded" and task.result.output == "done"
    assert not await world.rejections()


async def test_a_remote_agents_key_is_pinned_on_first_use(world: World) -> None:
    signer = Signer()
    await world.redis.hset(world.keys.tokens(SWARM), "r1", signer.public)
    await world.finish("t1", "r1", signer)
    assert (await world.read("t1")).status == "succeeded"
    assert world.keyring.get(SWARM, "r1") == signer.public


async def test_an_overwritten_result_is_rejected_once(world: World) -> None:
    await world.finish("t1", "a1", local(world, "a1"))
    forged = TaskResult(ok=True, agent="a1", attempt=1, output="pwned", confidence=1.0)
    await world.redis.hset(world.keys.task(SWARM, "t1"), "result", msgspec.json.encode(forged))
    for _ in range(3):  # read on every poll of the loop, announced once
        task = await world.read("t1")
        assert task.status == "failed" and task.result is None
        assert task.error == "result rejected: bad signature"
    assert await world.rejections() == {("t1", "bad signature"): 1}


async def test_another_tasks_result_and_seal_are_rejected(world: World) -> None:
    signer = local(world, "a1")
    await world.finish("t1", "a1", signer, output="honest")
    await world.finish("t2", "a1", signer, output="the other task's")
    t2 = await world.redis.hmget(world.keys.task(SWARM, "t2"), ["result", "seal"])
    await world.redis.hset(world.keys.task(SWARM, "t1"), mapping={"result": t2[0], "seal": t2[1]})
    assert (await world.read("t1")).error == "result rejected: bad signature"


async def test_an_old_attempts_result_is_rejected(world: World) -> None:
    await world.finish("t1", "a1", local(world, "a1"))
    # The task moved on to a later attempt; its first result (and seal) is put back.
    await world.redis.hset(world.keys.task(SWARM, "t1"), "attempts", 2)
    task = await world.read("t1")
    assert task.error == "result rejected: result of attempt 1, the task is at attempt 2"
    # Claiming the later attempt inside the result breaks the seal instead.
    raw = await world.redis.hget(world.keys.task(SWARM, "t1"), "result")
    bumped = msgspec.json.decode(raw)
    bumped["attempt"] = 2
    await world.redis.hset(world.keys.task(SWARM, "t1"), "result", msgspec.json.encode(bumped))
    assert (await world.read("t1")).error == "result rejected: bad signature"


async def test_another_incarnations_seal_is_rejected(world: World) -> None:
    await world.finish("t1", "a1", local(world, "a1"), incarnation="inc-1")
    await world.redis.hset(world.keys.task(SWARM, "t1"), "inc:a1", "inc-2")
    assert (await world.read("t1")).error == "result rejected: bad signature"


async def test_a_result_signed_with_a_key_swapped_in_redis_is_rejected(world: World) -> None:
    local(world, "a1")
    attacker = Signer()
    await world.redis.hset(world.keys.tokens(SWARM), "a1", attacker.public)
    await world.finish("t1", "a1", attacker)  # the attacker completes a1's task itself
    assert (await world.read("t1")).error == "result rejected: bad signature"
    assert await world.rejections() == {("t1", "bad signature"): 1}


async def test_an_unsigned_result_is_rejected(world: World) -> None:
    local(world, "a1")
    await world.finish("t1", "a1", None)
    assert (await world.read("t1")).error == "result rejected: unsigned result"


async def test_only_the_agent_holding_the_slot_may_report_its_task(world: World) -> None:
    local(world, "a1")
    other = local(world, "b1")  # a genuine agent of the swarm, not a1's replacement
    await world.finish("t1", "b1", other, target="a1")
    assert (await world.read("t1")).error == (
        "result rejected: agent 'b1' does not hold the task's slot 'a1'"
    )
    # A replacement: its key is pinned for the slot it fills, too.
    replacement = local(world, "a2")
    assert world.keyring.pin(SWARM, "a1", replacement.public, replace=True)
    await world.finish("t2", "a2", replacement, target="a1")
    assert (await world.read("t2")).status == "succeeded"


async def test_a_result_is_held_back_while_its_agents_key_is_in_the_pipe(world: World) -> None:
    signer = Signer()
    world.keyring.expect(SWARM, "a1")  # spawned; the key not delivered yet
    await world.redis.hset(world.keys.tokens(SWARM), "a1", Signer().public)  # a forged one
    await world.finish("t1", "a1", signer)
    held = await world.read("t1")  # not finished, as far as the loop knows
    assert held.status == "running" and held.result is None
    assert world.keyring.pin(SWARM, "a1", signer.public, replace=True)
    assert (await world.read("t1")).status == "succeeded"
    assert not await world.rejections()


# --------------------------------------------------------------------- end to end


async def test_a_result_forged_for_an_implementers_task_is_not_accepted(
    daemon_factory: DaemonFactory, short_tmp: Path
) -> None:
    """Real cfnd and cfn-agents: while the implementer works, someone who writes Redis
    marks its task succeeded with a confident result and wakes the loop. Unverified, the
    loop would pass the confidence gate on it and the validators would approve."""
    gate = short_tmp / "gate.fifo"
    os.mkfifo(gate)
    impl = EXAMPLES / "implementer.py"
    config = (
        f'[agent_types.impl]\nkind = "command"\nrole = "implementer"\n'
        f'exec = ["sh", "-c", "read _ < {gate}; exec {sys.executable} {impl}"]\n'
        f'[agent_types.check]\nkind = "command"\nrole = "validator"\n'
        f'exec = ["{sys.executable}", "{EXAMPLES / "validator.py"}"]\n'
    )
    d = await daemon_factory(config_text=config, **FAST)
    redis, keys = d.store.redis, d.store.keys
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=4, name="sealed")
        async with cfn.events_follow(types=["task.started", "security"]) as events:
            info = await cfn.call(
                "loop.start",
                task="ship it",
                implementers=["impl"],
                validators=["check"],
                max_loop2=1,
                max_loop3=1,
            )
            agent = info.implementers[0]
            tid = impl_task_id(info.id, 1, 1, agent)
            await asyncio.wait_for(next_event(events, "task.started", task=tid), 60)
            forged = TaskResult(ok=True, agent=agent, attempt=1, output="pwned", confidence=1.0)
            await redis.hset(
                keys.task("sealed", tid),
                mapping={"status": "succeeded", "result": msgspec.json.encode(forged)},
            )
            await redis.publish(keys.notify("sealed"), f"done:{tid}")
            rejected = await asyncio.wait_for(
                next_event(events, "security.result_rejected", task=tid), 30
            )
        assert rejected.data["reason"] == "unsigned result", rejected.data
        assert rejected.data["agent"] == agent
        await asyncio.to_thread(gate.write_text, "go\n")  # the real implementer finishes
        async with cfn.stream("loop.follow", {"run": info.id}) as follow:
            async for _ in follow:
                pass
        final = await cfn.call("loop.status", run=info.id)
    assert final.status == "escalated", final
    assert not final.rounds, final.rounds  # no validator ever saw "pwned"
    assert "result rejected: unsigned result" in final.feedback, final.feedback
    audit = await redis.xrange(keys.audit)
    refused = [e for _, e in audit if e[b"op"] == b"security.result_rejected"]
    assert [e[b"user"].decode() for e in refused] == [f"agent:{agent}"]
    assert tid in refused[0][b"args"].decode()


async def test_a_small_sealed_tasks_hash_stays_a_listpack(world: World) -> None:
    # The seal is stored as its 64 raw bytes: its 136-byte text form would make the
    # whole task hash a hashtable (about three times the memory per stored task).
    signer = local(world, "impl-1")
    await world.finish("t-small", "impl-1", signer)
    key = world.keys.task(SWARM, "t-small")
    assert len(await world.redis.hget(key, "seal")) == 64
    assert await world.redis.object("ENCODING", key) == b"listpack"
    task = await world.read("t-small")
    assert task is not None and task.result.output == "done"
