"""kill -9 of cfnd while agents work: a restarted cfnd recovers everything, losing nothing."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from redis import Redis

from cfn_client.api import Client
from tests.conftest import SHARED_REDIS
from tests.daemon_proc import CfndProcess

# Fast beats, a lapse of 50 of them: no agent is killed here, and a beat that is late
# on a loaded machine must not get a healthy agent killed as hung (and its work re-run).
FAST_ENV = {"CFN_AGENTS__HEARTBEAT_INTERVAL_S": "0.2", "CFN_AGENTS__LAPSE_S": "10"}


def test_sigkill_cfnd_mid_work_then_restart_loses_nothing(
    cfnd_factory: Callable[..., CfndProcess], tmp_path: Path
) -> None:
    proc = cfnd_factory("--redis-url", SHARED_REDIS, env=FAST_ENV)
    runs = tmp_path / "runs"
    with Client(proc.socket, timeout_s=60) as cfn:
        cfn.swarm_init("mesh", 4, name="phoenix")
        cfn.agent_create("shell", count=3)
        ids = [cfn.task_submit(f'echo "$CFN_TASK_ID" >> {runs}; sleep 0.2').id for _ in range(40)]
        with cfn.events_follow(types=["task.succeeded"]) as events:
            for n, _ in enumerate(events, start=1):
                if n == 5:  # well under way: some done, some running, most queued
                    break
        agents_before = {a.id: a.pid for a in cfn.agent_list().agents}

    proc.stop(signal.SIGKILL)
    proc.notifications.clear()
    proc.start()  # same socket, state dir and key prefix

    with Client(proc.socket, timeout_s=120) as cfn:
        assert [s.id for s in cfn.swarm_list().swarms] == ["phoenix"]
        done = cfn.task_wait(ids, timeout_s=90).tasks
        assert [t.status for t in done] == ["succeeded"] * len(ids)
        results = Counter(
            e.data["task"] for e in cfn.events_list(types=["task.succeeded"], limit=10_000).events
        )
        assert results == Counter(ids)  # one result per task, none lost
        agents_after = {a.id: a for a in cfn.agent_list().agents}
        # The agents outlived the crash and were adopted, not replaced.
        for agent_id, pid in agents_before.items():
            assert agents_after[agent_id].pid == pid
            assert agents_after[agent_id].status in ("idle", "busy")
    assert set(runs.read_text().split()) == set(ids)
    assert proc.stop() == 0


def test_sigkill_cfnd_during_loop2_of_round_2_resumes_without_rework(
    cfnd_factory: Callable[..., CfndProcess], tmp_path: Path, key_prefix: str
) -> None:
    from tests.test_loop_integration import agent_types

    impl_log = tmp_path / "impl.log"
    conf = tmp_path / "cfnd.toml"
    conf.write_text(
        agent_types({"EXAMPLE_LOG": str(impl_log)}, {"EXAMPLE_APPROVE_FROM_ROUND": "3"})
    )
    proc = cfnd_factory("--config", str(conf), "--redis-url", SHARED_REDIS, env=FAST_ENV)
    with Client(proc.socket, timeout_s=60) as cfn:
        cfn.swarm_init("mesh", 8, name="crashloop")
        run = cfn.loop_start(
            "build the importer",
            implementers=["impl", "impl"],
            validators=["check", "check", "check", "check"],
        )
        with cfn.loop_follow(run.id) as events:
            for ev in events:
                if ev.type == "loop.validating" and ev.data["round"] == 2:
                    break
    proc.stop(signal.SIGKILL)  # in the middle of Loop 2, round 2
    proc.notifications.clear()
    proc.start()
    with Client(proc.socket, timeout_s=60) as cfn:
        with cfn.loop_follow(run.id) as events:
            for _ in events:
                pass
        final = cfn.loop_status(run.id)
    # The same outcome as an uninterrupted run (see test_loop_integration).
    assert final.status == "done"
    assert final.decision == "PROCEED"
    assert [r["status"] for r in final.rounds] == ["failed", "failed", "passed"]
    # No implementer step ran twice...
    runs = Counter(
        (r["agent"], r["round"], r["iteration"])
        for r in map(json.loads, impl_log.read_text().splitlines())
    )
    assert set(runs.values()) == {1}
    assert len(runs) == 2 * 3  # two implementers, one iteration in each of 3 rounds
    # ...and no vote was counted twice: one per validator per round.
    redis = Redis.from_url(SHARED_REDIS)
    try:
        for rnd in (1, 2, 3):
            entries = redis.xrange(f"{key_prefix}:{{crashloop}}:votes:{run.id}:{rnd}")
            voters = [f[b"validator"] for _, f in entries]
            assert len(voters) == len(set(voters)) == 4
    finally:
        redis.close()
    assert proc.stop() == 0


@pytest.mark.timeout(240)
def test_sigkill_cfnd_during_loop2_on_the_embedded_redis_reaches_the_real_outcome(
    cfnd_factory: Callable[..., CfndProcess], tmp_path: Path
) -> None:
    """The embedded Redis dies with cfnd, so the validators meet a store outage while
    they vote: they retry, the round closes on their votes, not on round_timeout_s."""
    import sys
    import time

    from tests.test_loop_integration import EXAMPLES

    validator = EXAMPLES / "validator.py"
    conf = tmp_path / "cfnd.toml"
    conf.write_text(
        f'[agent_types.impl]\nkind = "command"\n'
        f'exec = ["{sys.executable}", "{EXAMPLES / "implementer.py"}"]\nrole = "implementer"\n'
        # Each validator works 2 s: cfnd (and its Redis) die while they do.
        f'[agent_types.check]\nkind = "command"\n'
        f'exec = ["sh", "-c", "sleep 2; exec {sys.executable} {validator}"]\n'
        'role = "validator"\n'
    )
    env = {**FAST_ENV, "CFN_AGENTS__LAPSE_S": "10", "CFN_LOOP__ROUND_TIMEOUT_S": "600"}
    proc = cfnd_factory("--config", str(conf), env=env)  # no Redis URL: the embedded one
    with Client(proc.socket, timeout_s=60) as cfn:
        cfn.swarm_init("mesh", 8, name="embedded")
        run = cfn.loop_start("t", implementers=["impl"], validators=["check"] * 4)
        validating = False
        started = set()
        with cfn.events_follow(types=["loop.validating", "task.started"]) as events:
            for ev in events:
                validating = validating or ev.type == "loop.validating"
                if validating and ev.type == "task.started":
                    started.add(ev.data["task"])
                if len(started) == 4:  # every validator is at work
                    break
        agents_before = {a.id: a.pid for a in cfn.agent_list().agents}
    proc.stop(signal.SIGKILL)
    proc.notifications.clear()
    # One validator dies too while no cfnd watches: the next one must replace it.
    victim = run.validators[0]
    os.killpg(agents_before.pop(victim), signal.SIGKILL)
    time.sleep(4.0)  # the outage: the validators finish and vote while Redis is down
    proc.start()
    with Client(proc.socket, timeout_s=60) as cfn:
        with cfn.loop_follow(run.id) as events:
            for _ in events:
                pass
        final = cfn.loop_status(run.id)
        agents_after = {a.id: a for a in cfn.agent_list().agents}
    assert final.status == "done", (final.status, final.outcome_reason, proc.log()[-3000:])
    assert [r["status"] for r in final.rounds] == ["passed"]
    assert final.rounds[0]["votes_counted"] == 4
    # The validators lived through the outage (adopted, not crashed and replaced)...
    for agent_id, pid in agents_before.items():
        assert agents_after[agent_id].pid == pid
    # ...except the killed one, whose slot a replacement filled (and voted for).
    assert agents_after[victim].status == "failed"
    assert [a.id for a in agents_after.values() if a.slot == victim and a.status == "idle"]
    assert proc.stop() == 0
