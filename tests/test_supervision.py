"""Supervision under faults, against real cfnd, cfn-agent and redis-server processes.

One bad moment (a Redis outage, a stall, a dead agent) restarts or waits out the
part it hit; it never ends cfnd, never kills healthy agents, and agents whose cfnd
is gone for good end by themselves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cfn_client.api import Client
from cfn_client.wire.errors import StoreUnavailable
from tests.daemon_proc import BIN, CfndProcess
from tests.redis_servers import RedisFactory, pid_alive, wait_pid_gone
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

# Fast beats and lapses; Redis commands give up quickly so an outage shows at once.
FAST = {
    "CFN_AGENTS__HEARTBEAT_INTERVAL_S": "0.25",
    "CFN_AGENTS__LAPSE_S": "2",
    "CFN_AGENTS__RESTART_BACKOFF_S": "0.1",
    "CFN_AGENTS__STOP_GRACE_S": "1",
    "CFN_REDIS__COMMAND_TIMEOUT_S": "1",
    "CFN_REDIS__HEALTH_INTERVAL_S": "0.25",
    "CFN_REDIS__RETRY_MAX_S": "0.5",
}
PERSISTENT = ["appendonly yes", "appendfsync always"]


def logged(proc: CfndProcess, event: str) -> list[dict[str, object]]:
    return [e for e in proc.log_events() if e.get("event") == event]


def live_agents(cfn: Client) -> dict[str, int]:
    """Live agents by id → pid ({} while cfnd still reports Redis unavailable)."""
    try:
        agents = cfn.agent_list().agents
    except StoreUnavailable:  # until its health probe has seen Redis come back
        return {}
    return {a.id: a.pid or 0 for a in agents if a.status in ("idle", "busy")}


def finished(cfn: Client, run: str) -> Any:
    """The run's status once it has finished or escalated, else None."""
    try:
        status = cfn.loop_status(run)
    except StoreUnavailable:
        return None
    return status if status.status in ("done", "failed", "escalated") else None


def start_swarm(cfn: Client, agents: int) -> dict[str, int]:
    cfn.swarm_init("mesh", 4, name="sup")
    cfn.agent_create("shell", count=agents)
    return wait_until(
        lambda: (a := live_agents(cfn)) and len(a) == agents and a,
        60,
        f"{agents} registered agents",
    )


def test_agent_dies_while_redis_is_down_cfnd_carries_on_and_replaces_it(
    cfnd_factory: Callable[..., CfndProcess], redis_factory: RedisFactory
) -> None:
    redis = redis_factory(extra_conf=PERSISTENT)
    proc = cfnd_factory("--redis-url", redis.url, env=FAST)
    with Client(proc.socket, timeout_s=30) as cfn:
        ((dead_id, dead_pid),) = start_swarm(cfn, 1).items()
    redis.stop()
    os.kill(dead_pid, signal.SIGKILL)
    # cfnd notices the death and cannot report it: it must wait, not crash.
    wait_until(lambda: logged(proc, "agent_died"), 30, "cfnd to see the agent die")
    wait_until(lambda: logged(proc, "child_store_unavailable"), 30, "the report to wait")
    assert proc.proc is not None and proc.proc.poll() is None, proc.log()
    redis.start()
    with Client(proc.socket, timeout_s=30) as cfn:
        wait_until(lambda: (a := live_agents(cfn)) and dead_id not in a, 60, "a replacement agent")
        assert cfn.agent_status(dead_id).status == "failed"
        assert (
            cfn.task_wait([cfn.task_submit("echo ok").id], timeout_s=30).tasks[0].status
            == "succeeded"
        )
    assert proc.stop() == 0


def test_redis_stall_longer_than_the_lapse_kills_no_healthy_agent(
    cfnd_factory: Callable[..., CfndProcess], redis_factory: RedisFactory
) -> None:
    redis = redis_factory()
    proc = cfnd_factory("--redis-url", redis.url, env=FAST)
    with Client(proc.socket, timeout_s=30) as cfn:
        before = start_swarm(cfn, 2)
    assert redis.pid is not None
    os.kill(redis.pid, signal.SIGSTOP)
    try:
        # The fault itself: Redis answers nothing for 2.5 lapse periods.
        time.sleep(5.0)
        wait_until(lambda: logged(proc, "store_unavailable"), 30, "cfnd to see the stall")
    finally:
        os.kill(redis.pid, signal.SIGCONT)
    with Client(proc.socket, timeout_s=30) as cfn:
        wait_until(lambda: logged(proc, "store_available"), 30, "Redis back")
        # Past a whole lapse period after the stall: the supervisor has judged again.
        resumed = time.monotonic()
        wait_until(lambda: time.monotonic() - resumed > 4.0, 10, "two lapse periods")
        assert live_agents(cfn) == before
        assert not logged(proc, "agent_hung"), "a healthy agent was killed as hung"
        assert all(pid_alive(pid) for pid in before.values())
    assert proc.stop() == 0


def test_local_agents_of_a_cfnd_killed_for_good_exit_by_themselves(
    cfnd_factory: Callable[..., CfndProcess], redis_factory: RedisFactory
) -> None:
    redis = redis_factory()
    proc = cfnd_factory("--redis-url", redis.url, env={**FAST, "CFN_AGENTS__ORPHAN_AFTER_S": "2"})
    with Client(proc.socket, timeout_s=30) as cfn:
        pids = start_swarm(cfn, 2)
    proc.stop(signal.SIGKILL)
    for pid in pids.values():
        assert wait_pid_gone(pid, 30), f"orphaned agent {pid} is still running"
    # They handed their work back and said so on the way out.
    client = redis.client()
    try:
        prefix = proc.env["CFN_KEY_PREFIX"]
        for agent in pids:
            status = client.hget(f"{prefix}:{{sup}}:agent:{agent}", "status")
            assert status == b"stopped"
    finally:
        client.close()


def test_orphans_exit_even_when_redis_is_gone_too(
    cfnd_factory: Callable[..., CfndProcess], redis_factory: RedisFactory
) -> None:
    redis = redis_factory()
    proc = cfnd_factory("--redis-url", redis.url, env={**FAST, "CFN_AGENTS__ORPHAN_AFTER_S": "2"})
    with Client(proc.socket, timeout_s=30) as cfn:
        pids = start_swarm(cfn, 2)
    proc.stop(signal.SIGKILL)
    redis.kill()
    for pid in pids.values():
        assert wait_pid_gone(pid, 30), f"orphaned agent {pid} kept retrying a dead Redis"


def test_adopted_agents_outlive_the_orphan_bound(
    cfnd_factory: Callable[..., CfndProcess], redis_factory: RedisFactory
) -> None:
    redis = redis_factory()
    env = {**FAST, "CFN_AGENTS__ORPHAN_AFTER_S": "2"}
    proc = cfnd_factory("--redis-url", redis.url, env=env)
    with Client(proc.socket, timeout_s=30) as cfn:
        pids = start_swarm(cfn, 1)
    proc.stop(signal.SIGKILL)
    proc.notifications.clear()
    proc.start()
    adopted = time.monotonic()
    # Three orphan bounds with the new cfnd's lease: nobody leaves.
    wait_until(lambda: time.monotonic() - adopted > 6.0, 10, "three orphan bounds")
    assert all(pid_alive(pid) for pid in pids.values())
    with Client(proc.socket, timeout_s=30) as cfn:
        assert live_agents(cfn) == pids
    assert proc.stop() == 0


def test_sigterm_stops_an_agent_whose_redis_is_gone(
    cfnd_factory: Callable[..., CfndProcess], redis_factory: RedisFactory, tmp_path: Path
) -> None:
    redis = redis_factory()
    proc = cfnd_factory("--redis-url", redis.url, env=FAST)
    started = tmp_path / "started"
    with Client(proc.socket, timeout_s=30) as cfn:
        ((agent, pid),) = start_swarm(cfn, 1).items()
        cfn.task_submit(f"touch {started}; sleep 60")
        wait_until(started.exists, 30, "the task to start")
    redis.kill()
    os.kill(pid, signal.SIGTERM)
    # Grace (1 s) for the task, again after cancelling it, then a bounded hand-back.
    assert wait_pid_gone(pid, 20), f"agent {agent} ignored SIGTERM without Redis"
    assert proc.proc is not None and proc.proc.poll() is None


def test_a_redis_outage_during_loop2_ends_in_the_real_outcome(
    cfnd_factory: Callable[..., CfndProcess], redis_factory: RedisFactory, tmp_path: Path
) -> None:
    from tests.test_loop_integration import agent_types

    redis = redis_factory(extra_conf=PERSISTENT)
    voting = tmp_path / "voting"
    voting.mkdir()
    script = tmp_path / "slowcheck.sh"
    script.write_text(
        f'touch {voting}/"$CFN_TASK_ID"; sleep 2\n'
        """echo '{"vote": "approve", "confidence": 0.95}'\n"""
    )
    conf = tmp_path / "cfnd.toml"
    conf.write_text(
        agent_types({}, {})
        + '[agent_types.slowcheck]\nkind = "command"\nrole = "validator"\n'
        + f'exec = ["sh", "{script}"]\n'
    )
    proc = cfnd_factory("--config", str(conf), "--redis-url", redis.url, env=FAST)
    with Client(proc.socket, timeout_s=60) as cfn:
        cfn.swarm_init("mesh", 8, name="outage")
        run = cfn.loop_start(
            "build the importer", implementers=["impl"], validators=["slowcheck"] * 3
        )
        wait_until(lambda: len(list(voting.iterdir())) == 3, 90, "three validators voting")
    redis.stop()
    outage = time.monotonic()
    wait_until(lambda: time.monotonic() - outage > 4.0, 10, "a 4 s outage")  # the fault
    assert proc.proc is not None and proc.proc.poll() is None, "cfnd died in the outage"
    redis.start()
    with Client(proc.socket, timeout_s=60) as cfn:
        final = wait_until(lambda: finished(cfn, run.id), 120, "the run's outcome")
    assert (final.status, final.decision) == ("done", "PROCEED"), final
    assert proc.stop() == 0


def test_an_agent_started_by_a_cfnd_that_died_meanwhile_exits_by_itself(
    cfnd_factory: Callable[..., CfndProcess], redis_factory: RedisFactory
) -> None:
    """cfnd killed while its agent was still starting: by the time the agent looked, its
    parent was already init. It took init for its supervisor and lived on for good
    (seen: test agents alive 40 minutes past --orphan-after-s). cfnd now names itself."""
    redis = redis_factory()
    proc = cfnd_factory("--redis-url", redis.url, env={**FAST, "CFN_AGENTS__ORPHAN_AFTER_S": "1"})
    with Client(proc.socket, timeout_s=30) as cfn:
        start_swarm(cfn, 1)  # the swarm and its published agent types
    assert proc.proc is not None
    dead_cfnd = proc.proc.pid
    proc.stop(signal.SIGKILL)
    agent_bin = BIN / "cfn-agent"
    argv = [
        str(agent_bin), "--redis", redis.url, "--swarm", "sup", "--type", "shell",
        "--id", "late-1", "--role", "implementer", "--key-prefix", proc.env["CFN_KEY_PREFIX"],
        "--heartbeat-s", "0.25", "--orphan-after-s", "1", "--local",
        "--parent-pid", str(dead_cfnd), "--log-format", "json",
    ]  # fmt: skip
    # Our child: its parent (this test) lives, and is not the cfnd it names.
    late = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # The dead cfnd's lease lapses within 5 s; then one orphan bound (1 s).
        _, err = late.communicate(timeout=60)
    finally:
        if late.poll() is None:
            late.kill()
            late.communicate()
    assert late.returncode == 0, err
    assert b'"agent_orphaned"' in err
