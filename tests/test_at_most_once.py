"""Effects at most once per delivery from cfn's side (issue 9, part 2), against a real
cfnd, real cfn-agent processes and a real Redis:

- an executor child dies with its agent (PDEATHSIG + its process group), so a killed
  agent's task does not finish its side effect after being handed to another agent;
- a restarted agent (same id, new process) does not re-run the task its previous
  incarnation had started: the task is reclaimed as ``agent-lost`` and retried by policy;
- a task that completed before its agent died keeps its result.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cfn_client.api import AsyncClient
from cfn_daemon.app import Daemon
from cfn_daemon.swarm.agent_login import agent_redis_url
from cfn_daemon.swarm.supervisor import agent_command
from tests.conftest import DaemonFactory
from tests.redis_servers import pid_alive, wait_pid_gone
from tests.test_swarm_integration import (
    all_events,
    next_event,
    started_signal,
    until_running,
    wait_idle,
    wait_tasks,
)

# A long lapse: the restarted agent, not cfnd's lapse detection, meets the old task.
SLOW_LAPSE = {
    "agents.heartbeat_interval_s": 0.2,
    "agents.lapse_s": 60.0,
    "tasks.retry_base_s": 0.05,
    "agents.restart_backoff_s": 0.05,
    "agents.stop_grace_s": 1.0,
}


@pytest.fixture
async def d(daemon_factory: DaemonFactory) -> Daemon:
    return await daemon_factory(**SLOW_LAPSE)


@pytest.fixture
async def cfn(d: Daemon) -> AsyncIterator[AsyncClient]:
    ready: asyncio.Future[AsyncClient] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def owner() -> None:
        async with AsyncClient(d.socket_path, timeout_s=60) as client:
            ready.set_result(client)
            await done.wait()

    task = asyncio.create_task(owner())
    yield await ready
    done.set()
    await task


async def remote_agent(d: Daemon, swarm: str, agent_id: str) -> asyncio.subprocess.Process:
    """A real cfn-agent joining ``swarm`` as ``agent_id`` (not a child of cfnd)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFN_")}
    return await asyncio.create_subprocess_exec(
        *agent_command(),
        "--redis",
        agent_redis_url(d.store),
        "--swarm",
        swarm,
        "--type",
        "shell",
        "--id",
        agent_id,
        "--key-prefix",
        d.store.keys.prefix,
        "--heartbeat-s",
        "0.2",
        "--grace-s",
        "1",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )


async def stop_agent(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)


async def test_killed_agents_executor_child_never_finishes_its_side_effect(
    d: Daemon, cfn: AsyncClient, tmp_path: Path
) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=3, name="pdeath")
    proc = await remote_agent(d, "pdeath", "victim")
    effect, pidfile = tmp_path / "effect", tmp_path / "child.pid"
    fifo, signal_running = started_signal(tmp_path)
    # A grandchild (a background subshell) does the side effect after a delay, so both
    # PDEATHSIG of the leader and the group kill are needed to stop it.
    text = f"(sleep 1.5; touch {effect}) & echo $! > {pidfile}; {signal_running}; wait"
    try:
        await wait_idle(cfn, 1, agent="victim")
        task = await cfn.call("task.submit", text=text, max_attempts=1)
        await until_running(fifo)
        child = int(pidfile.read_text())
        assert pid_alive(child)
        proc.kill()  # SIGKILL the agent alone: no handler, no clean-up of its own
        await proc.wait()
        assert await asyncio.to_thread(wait_pid_gone, child, 10.0), "executor child lives on"
        # Past the child's delay: the effect would exist by now had it lived on.
        await asyncio.sleep(2.0)
        assert not effect.exists()
        info = await cfn.call("task.status", task=task.id)
        assert info.status == "running"  # cfnd has not noticed yet (60 s lapse)
    finally:
        await stop_agent(proc)


async def test_restarted_agent_does_not_rerun_the_task_it_had_started(
    d: Daemon, cfn: AsyncClient, tmp_path: Path
) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=3, name="again")
    marker = tmp_path / "runs"
    fifo, signal_running = started_signal(tmp_path)
    text = f"echo x >> {marker}; {signal_running}; sleep 30"
    first = await remote_agent(d, "again", "fixed-id")
    second = None
    try:
        await wait_idle(cfn, 1, agent="fixed-id")
        async with cfn.events_follow(types=["task"]) as events:
            task = await cfn.call("task.submit", text=text, max_attempts=1)
            await next_event(events, "task.started", task=task.id)
            await until_running(fifo)
            first.kill()
            await first.wait()
            # systemd (or an operator) restarts the agent under the same id at once.
            second = await remote_agent(d, "again", "fixed-id")
            lost = await next_event(events, "task.lost", task=task.id)
            assert lost.data["agent"] == "fixed-id"
        (final,) = await wait_tasks(cfn, [task.id], timeout_s=30)
        assert final.status == "failed"
        assert final.error == "agent lost while running the last allowed attempt"
        assert final.attempts == 1
        assert marker.read_text().split() == ["x"]  # ran once, never again by cfn
        dlq = (await cfn.call("dlq.list")).tasks
        assert [t.id for t in dlq] == [task.id]
        agent = await cfn.call("agent.status", agent="fixed-id")
        assert agent.status == "idle" and agent.current_task is None
    finally:
        await stop_agent(first)
        if second is not None:
            await stop_agent(second)


async def test_restarted_agents_lost_task_is_retried_by_policy(
    d: Daemon, cfn: AsyncClient, tmp_path: Path
) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=3, name="policy")
    marker = tmp_path / "runs"
    fifo, signal_running = started_signal(tmp_path)
    text = (
        f'echo x >> {marker}; [ "$(wc -l < {marker})" -ge 2 ] && {{ echo second; exit 0; }}; '
        f"{signal_running}; sleep 30"
    )
    first = await remote_agent(d, "policy", "fixed-id")
    second = None
    try:
        await wait_idle(cfn, 1, agent="fixed-id")
        task = await cfn.call("task.submit", text=text, max_attempts=2)
        await until_running(fifo)
        first.kill()
        await first.wait()
        second = await remote_agent(d, "policy", "fixed-id")
        (final,) = await wait_tasks(cfn, [task.id], timeout_s=30)
        assert final.status == "succeeded"
        assert final.attempts == 2
        assert final.result is not None and final.result.output.strip() == "second"
        assert marker.read_text().split() == ["x", "x"]
        requeued = [
            e.data for e in await all_events(cfn, ["task.requeued"]) if e.data["task"] == task.id
        ]
        assert requeued == [{"task": task.id, "reason": "agent-lost"}]
        started = [e for e in await all_events(cfn, ["task.started"]) if e.data["task"] == task.id]
        assert [e.data["attempt"] for e in started] == [1, 2]
    finally:
        await stop_agent(first)
        if second is not None:
            await stop_agent(second)


async def test_task_completed_before_its_agent_died_keeps_its_result(
    cfn: AsyncClient, d: Daemon
) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=3, name="kept")
    (created,) = (await cfn.call("agent.create", type="shell")).agents
    victim = created.id
    task = await cfn.call("task.submit", text="echo kept-result", max_attempts=1)
    (done,) = await wait_tasks(cfn, [task.id])
    assert done.status == "succeeded"
    info = await cfn.call("agent.status", agent=victim)
    async with cfn.events_follow(types=["agent"]) as events:
        os.killpg(info.pid, signal.SIGKILL)
        failed = await next_event(events, "agent.failed", agent=victim)
    assert failed.data["requeued"] == []
    after = await cfn.call("task.status", task=task.id)
    assert after.status == "succeeded"
    assert after.result is not None and after.result.output.strip() == "kept-result"
    assert after.attempts == 1
    assert not [e for e in await all_events(cfn, ["task.requeued"]) if e.data["task"] == task.id]


async def test_a_start_retried_after_its_reply_was_lost_still_runs_the_task(
    daemon_factory: DaemonFactory,
) -> None:
    """redis-py retries a start whose reply was lost (Redis crashed right after running
    it): the same start again must run the task, not skip it as a re-delivery and leave
    it `running` with nobody on it. Another entry for it is still a duplicate."""
    d = await daemon_factory()
    async with AsyncClient(d.socket_path, timeout_s=30) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=2, name="restart")
    queue, keys = d.swarms.tasks, d.store.keys
    task = await queue.submit("restart", text="echo once", type="nobody-runs-this")
    # As if the dispatcher had assigned it to agent a1 (work entry 5-0).
    await d.store.redis.hset(keys.task("restart", task.id), mapping={"status": "assigned"})
    first = await queue.start("restart", task.id, "a1", incarnation="inc-1", entry_id="5-0")
    again = await queue.start("restart", task.id, "a1", incarnation="inc-1", entry_id="5-0")
    other = await queue.start("restart", task.id, "a1", incarnation="inc-1", entry_id="6-0")
    assert not isinstance(first, str) and first.status == "running"
    assert not isinstance(again, str) and again.attempts == first.attempts == 1
    assert other == "duplicate"
