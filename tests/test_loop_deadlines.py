"""No hang without an end (issue 9, part 3): every loop phase has a deadline, drivers
stop when their run is gone, votes survive a Redis outage. Real cfnd, real agents."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from cfn_client.api import AsyncClient
from cfn_client.wire.errors import StoreUnavailable
from tests.conftest import DaemonFactory
from tests.redis_servers import RedisFactory
from tests.test_loop_integration import EXAMPLES, agent_types, run_to_rest
from tests.test_swarm_integration import next_event, until_running

FAST = {
    "agents.heartbeat_interval_s": 0.2,
    "agents.lapse_s": 3.0,
    "agents.stop_grace_s": 1.0,
}


async def test_an_implementer_that_never_answers_fails_at_the_phase_deadline(
    daemon_factory: DaemonFactory,
) -> None:
    config = agent_types({"EXAMPLE_SLEEP": "600"}, {})
    d = await daemon_factory(config_text=config, **FAST, **{"loop.phase_timeout_s": 1.0})
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=4, name="late")
        info = await asyncio.wait_for(
            run_to_rest(
                cfn, task="never done", implementers=["impl"], validators=["check"], max_loop3=1
            ),
            60,
        )
        assert info.status == "escalated"
        assert info.outcome_reason == "gate failed 1 times in round 1"
        done = [e.data for e in (await cfn.call("events.list", types=["loop"])).events]
        impl = [e for e in done if "no result within loop.phase_timeout_s" in str(e)]
        assert impl, done
        (task,) = [t for t in (await cfn.call("task.list")).tasks if t.id.startswith(info.id)]
        assert task.status == "cancelled"  # its agent stops it; nothing runs on


async def test_swarm_reset_stops_the_run_driver(daemon_factory: DaemonFactory) -> None:
    config = agent_types({"EXAMPLE_SLEEP": "600"}, {})
    d = await daemon_factory(config_text=config, **FAST)
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=4, name="gone")
        run = await cfn.call("loop.start", task="t", implementers=["impl"], validators=["check"])
        driver = d.loops.drivers.driver(run.id)
        assert driver is not None
        await cfn.call("swarm.reset", force=True)
        # The driver ends by itself (it used to log `no run ...` every 2 s forever).
        await asyncio.wait_for(asyncio.shield(driver), 30)
        assert d.loops.drivers.driver(run.id) is None


async def answering(cfn: AsyncClient, op: str, timeout_s: float, **args: Any) -> Any:
    """``op``'s first reply that is not ``store_unavailable``; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await cfn.call(op, **args)
        except StoreUnavailable as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"cfnd still unavailable after {timeout_s}s") from exc
        await asyncio.sleep(0.05)


STALL_VOTE = """
import os, runpy, sys
with open(os.environ["VOTE_STARTED"], "w") as fifo:
    fifo.write("go")
with open(os.environ["VOTE_RELEASE"]) as fifo:  # blocks until the test lets it answer
    fifo.read()
sys.argv = [os.environ["VOTE_SCRIPT"]]
runpy.run_path(os.environ["VOTE_SCRIPT"], run_name="__main__")
"""


async def test_a_validators_vote_is_retried_across_a_redis_outage(
    redis_factory: RedisFactory, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    started, release = tmp_path / "started.fifo", tmp_path / "release.fifo"
    os.mkfifo(started)
    os.mkfifo(release)
    wrapper = tmp_path / "stall_vote.py"
    wrapper.write_text(STALL_VOTE)
    config = (
        f'[agent_types.impl]\nkind = "command"\n'
        f'exec = ["{sys.executable}", "{EXAMPLES / "implementer.py"}"]\nrole = "implementer"\n'
        f'[agent_types.check]\nkind = "command"\nexec = ["{sys.executable}", "{wrapper}"]\n'
        f'role = "validator"\nenv = {{ VOTE_STARTED = "{started}", VOTE_RELEASE = "{release}", '
        f'VOTE_SCRIPT = "{EXAMPLES / "validator.py"}" }}\n'
    )
    server = redis_factory(extra_conf=["appendonly yes", "appendfsync always"])
    # A lapse longer than the outage: this test is about the vote, not about liveness.
    d = await daemon_factory(
        redis_url=server.url, config_text=config, **{**FAST, "agents.lapse_s": 60.0}
    )
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=4, name="outage")
        run = await cfn.call("loop.start", task="t", implementers=["impl"], validators=["check"])
        await until_running(started)
        (validator,) = run.validators
        before = await cfn.call("agent.status", agent=validator)
        server.stop()  # Redis goes away while the validator is about to vote
        await asyncio.to_thread(release.write_text, "go")
        await asyncio.sleep(1.5)  # the outage lasts a while (the agent's vote fails)
        server.start()
        # cfnd answers store_unavailable until its health probe has seen Redis back.
        await answering(cfn, "loop.status", 30, run=run.id)
        async with cfn.events_follow(types=["loop"]) as events:
            info = await cfn.call("loop.status", run=run.id)
            if info.status not in ("done", "escalated"):
                await asyncio.wait_for(next_event(events, "loop.finished", run=run.id), 60)
        final = await cfn.call("loop.status", run=run.id)
        assert final.status == "done", final
        assert final.rounds[0]["votes_counted"] == 1
        after = await cfn.call("agent.status", agent=validator)
        assert after.pid == before.pid  # the same validator process: it did not crash
        tasks = [t for t in (await cfn.call("task.list")).tasks if t.target == validator]
        assert [t.attempts for t in tasks] == [1]


async def test_an_epic_that_cannot_recruit_says_why_and_escalates(
    daemon_factory: DaemonFactory,
) -> None:
    config = agent_types({}, {})
    d = await daemon_factory(config_text=config, **FAST, **{"loop.recruit_timeout_s": 1.0})
    phases = [{"name": "big", "implementers": ["impl"] * 2, "validators": ["check"] * 2}]
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=2, name="tiny")
        async with cfn.events_follow(types=["epic"]) as events:
            started = await cfn.call("epic.start", epic={"name": "too big", "phases": phases})
            blocked = await next_event(events, "epic.blocked", epic=started.id)
            assert "allows at most 2 agents" in blocked.data["reason"]
            escalated = await asyncio.wait_for(
                next_event(events, "epic.escalated", epic=started.id), 30
            )
            assert escalated.data["phase"] == "big"
        info = await cfn.call("epic.status", epic_id=started.id)
        assert info.status == "blocked"
        assert info.reason is not None and "allows at most 2 agents" in info.reason
        (phase,) = info.phases
        assert phase.status == "escalated" and phase.run is None
        assert phase.reason == info.reason
        # Said once per reason, not every pass of the driver.
        said = [
            e
            for e in (await cfn.call("events.list", types=["epic.blocked"])).events
            if e.data["epic"] == started.id
        ]
        assert len(said) == 1


async def test_a_vote_lost_after_its_task_stored_the_result_is_redispatched(
    key_prefix: str, tmp_path: Path
) -> None:
    """The real scripts on the real Redis: three validators finished their tasks (signed
    votes in the stored results), one vote never reached the round's stream. The round
    closes on all three (re-submitted from the result), not as no-quorum."""
    import secrets

    import redis.asyncio as aioredis

    from cfn_client.wire.schema.swarm import TaskResult
    from cfn_daemon.cfnloop.rounds import Ballot, Rounds
    from cfn_daemon.core import loop
    from cfn_daemon.core.consensus import sign_vote
    from cfn_daemon.core.placement import AgentRecord
    from cfn_daemon.core.run_records import val_task_id
    from cfn_daemon.core.votes import vote_from_result
    from cfn_daemon.queue.agents import AgentRegistry
    from cfn_daemon.queue.tasks import Retry, TaskQueue, now_ms
    from cfn_daemon.queue.votes import read_votes, submit_vote
    from cfn_daemon.store.keys import AGENT_GROUP, Keys
    from cfn_daemon.store.scripts import Scripts
    from cfn_daemon.swarm.dispatcher import ensure_groups
    from cfn_daemon.swarm.keyring import KeyRing
    from tests.conftest import SHARED_REDIS

    redis = aioredis.from_url(SHARED_REDIS)
    try:
        keys, scripts = Keys(key_prefix), Scripts(redis)
        tasks, registry = TaskQueue(redis, keys, scripts), AgentRegistry(redis, keys, scripts)
        swarm, run, validators = "s", "run-lost", ["v1", "v2", "v3"]
        ids = [val_task_id(run, 1, v) for v in validators]
        await ensure_groups(redis, [keys.queue(swarm, "normal")])
        for v, tid in zip(validators, ids, strict=True):
            token = secrets.token_hex(8)
            await redis.hset(keys.tokens(swarm), v, token)
            await registry.register(
                AgentRecord(id=v, swarm=swarm, type="check", role="validator", status="idle")
            )
            context = {"kind": "validate", "run": run, "round": 1}
            await tasks.submit(
                swarm, text="review", type="check", task_id=tid, target=v, context=context
            )
            ((_, entries),) = await redis.xreadgroup(
                "dispatch", "cfnd", {keys.queue(swarm, "normal"): ">"}, count=1
            ) or [(None, [])]
            assert await tasks.assign_many(
                swarm, [(tid, entries[0][0].decode(), "normal", [v], "")]
            )
            ((_, work),) = await redis.xreadgroup(AGENT_GROUP, v, {keys.work(swarm, v): ">"})
            entry = work[0][0].decode()
            assert not isinstance(
                await tasks.start(swarm, tid, v, incarnation="i1", entry_id=entry), str
            )
            result = TaskResult(ok=True, agent=v, attempt=1, vote="approve", confidence=0.95)
            vote = vote_from_result(v, result, 1)
            assert vote is not None
            result.signature = sign_vote(token.encode(), run, 1, vote)
            if v != "v3":  # v3's vote is lost on its way to the round
                signed = vote_from_result(v, result, 1)
                assert signed is not None
                await submit_vote(redis, keys.votes(swarm, run, 1), signed)
            assert await tasks.complete(swarm, tid, v, entry, result, Retry()) == "succeeded"
        await redis.hset(keys.run(swarm, run), "round_started:1", now_ms())
        state = loop.RunState(
            run_id=run, task="t", implementers=["i1"], validators=validators,
            status="loop2", loop2_round=1,
        )  # fmt: skip
        closed = await Rounds(redis, keys, tasks, KeyRing(tmp_path)).close(
            swarm, state, [Ballot(None, ids)], required=frozenset(), timeout_s=600
        )
        assert closed is not None and closed.passed, closed
        votes = await read_votes(redis, keys.votes(swarm, run, 1))
        assert sorted(v.validator for v in votes) == validators
    finally:
        async for key in redis.scan_iter(match=f"{key_prefix}:*"):
            await redis.delete(key)
        await redis.aclose()
