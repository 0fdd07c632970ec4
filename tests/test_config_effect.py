"""Config that is accepted has an effect, and config that is wrong stops cfnd with
EX_CONFIG (78) and a clear message: against the real cfnd executable."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cfn_client.api import AsyncClient
from cfn_client.wire.errors import CfnError
from cfn_daemon.core.placement import LIVE_STATUSES
from tests.conftest import SHARED_REDIS, DaemonFactory
from tests.daemon_proc import CFND, CfndProcess, cfnctl

CfndFactory = Callable[..., CfndProcess]


def _cfnd_once(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CFND, "--socket", str(tmp_path / "s.sock"), "--state-dir", str(tmp_path / "st"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("CFN_")},
    )


def test_non_utf8_config_file_exits_78_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "cfnd.toml"
    bad.write_bytes(b"[loop]\nmax_loop2 = 3\n# caf\xe9\n")
    res = _cfnd_once(tmp_path, "--config", str(bad), "--redis-url", SHARED_REDIS)
    assert res.returncode == 78, res
    assert str(bad) in res.stderr
    assert "UTF-8" in res.stderr and "byte 26" in res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_socket_group_exits_78_and_leaves_no_socket(tmp_path: Path) -> None:
    conf = tmp_path / "cfnd.toml"
    conf.write_text('[daemon]\nsocket_group = "no-such-group-cfn"\n')
    res = _cfnd_once(tmp_path, "--config", str(conf), "--redis-url", SHARED_REDIS)
    assert res.returncode == 78, res
    assert "daemon.socket_group" in res.stderr and "no-such-group-cfn" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "s.sock").exists()


def test_known_socket_group_is_applied(cfnd_factory: CfndFactory, tmp_path: Path) -> None:
    group = grp.getgrgid(os.getegid()).gr_name
    conf = tmp_path / "cfnd.toml"
    conf.write_text(f'[daemon]\nsocket_group = "{group}"\n')
    proc = cfnd_factory("--config", str(conf), "--redis-url", SHARED_REDIS)
    assert os.stat(proc.socket).st_gid == os.getegid()
    assert proc.stop() == 0


def _types(proc: CfndProcess) -> set[str]:
    res = cfnctl(proc.socket, "--json", "config", "show")
    assert res.returncode == 0, res
    keys = {e["key"] for e in json.loads(res.stdout)["entries"]}
    return {k.split(".")[1] for k in keys if k.startswith("agent_types.")}


def test_sighup_with_added_and_removed_agent_types(
    cfnd_factory: CfndFactory, tmp_path: Path
) -> None:
    conf = tmp_path / "cfnd.toml"
    conf.write_text('[agent_types.first]\nkind = "shell"\n')
    proc = cfnd_factory("--config", str(conf), "--redis-url", SHARED_REDIS)
    assert _types(proc) == {"first"}

    conf.write_text(
        '[agent_types.first]\nkind = "shell"\n\n[agent_types.second]\nkind = "shell"\n'
        'exec = ["sh", "-c"]\n'
    )
    proc.send_signal(signal.SIGHUP)
    proc.wait_for("STATUS=config reloaded")
    assert _types(proc) == {"first", "second"}

    proc.notifications.clear()
    conf.write_text('[agent_types.second]\nkind = "shell"\n')
    proc.send_signal(signal.SIGHUP)
    proc.wait_for("STATUS=config reloaded")
    assert _types(proc) == {"second"}
    assert cfnctl(proc.socket, "ping").returncode == 0
    assert proc.stop() == 0


# --------------------------------------------------------------------------- in-process

FAST = {
    "agents.heartbeat_interval_s": 0.2,
    "agents.lapse_s": 3.0,
    "agents.restart_backoff_s": 0.05,
    "agents.stop_grace_s": 1.0,
}


async def _first_event(cfn: AsyncClient, etype: str, timeout_s: float = 60.0) -> Any:
    """The first ``etype`` event (subscribe, then look back: nothing slips in between)."""
    async with asyncio.timeout(timeout_s):
        async with cfn.events_follow(types=[etype]) as events:
            seen = (await cfn.call("events.list", types=[etype])).events
            if seen:
                return seen[0]
            async for ev in events:
                return ev
    raise AssertionError(f"no {etype}")


@pytest.mark.parametrize(("base_s", "max_s", "delay_ms"), [(7.5, 60.0, 7500), (7.5, 2.5, 2500)])
async def test_task_retry_policy_comes_from_the_config(
    daemon_factory: DaemonFactory, base_s: float, max_s: float, delay_ms: int
) -> None:
    d = await daemon_factory(**FAST, **{"tasks.retry_base_s": base_s, "tasks.retry_max_s": max_s})
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=2)
        task = await cfn.call("task.submit", text="exit 3", max_attempts=3)
        ev = await _first_event(cfn, "task.retrying")
        assert ev.data["task"] == task.id
        assert ev.data["delay_ms"] == delay_ms


async def test_agent_reset_of_an_idle_agent_keeps_the_agent(
    daemon_factory: DaemonFactory,
) -> None:
    d = await daemon_factory(**FAST)
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=2)
        first = await cfn.call("task.submit", text="echo one")
        assert (await cfn.call("task.wait", tasks=[first.id], timeout_s=60)).tasks[0].status == (
            "succeeded"
        )
        (agent,) = (await cfn.call("agent.list")).agents
        reset = await cfn.call("agent.reset", agent=agent.id)
        assert reset.id == agent.id
        # The agent's blocking read survives the reset: it takes the next task itself.
        second = await cfn.call("task.submit", text="echo two")
        (done,) = (await cfn.call("task.wait", tasks=[second.id], timeout_s=60)).tasks
        assert done.status == "succeeded" and done.agent == agent.id
        after = (await cfn.call("agent.list")).agents
        assert [(a.id, a.pid, a.status) for a in after] == [(agent.id, agent.pid, "idle")]
        kinds = {e.type for e in (await cfn.call("events.list", types=["agent"])).events}
        assert kinds <= {"agent.spawned", "agent.registered", "agent.reset"}, kinds


async def test_failed_loop_start_leaves_no_agent_behind(daemon_factory: DaemonFactory) -> None:
    d = await daemon_factory(**FAST)
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=2)
        with pytest.raises(CfnError):
            # Room for two agents, the team needs four: the start fails half way.
            await cfn.call("loop.start", task="x", implementers=["shell"], validators=["shell"] * 3)
        assert (await cfn.call("loop.list")).runs == []
        deadline = asyncio.get_running_loop().time() + 30
        while live := [
            a.id for a in (await cfn.call("agent.list")).agents if a.status in LIVE_STATUSES
        ]:
            assert asyncio.get_running_loop().time() < deadline, live
            await asyncio.sleep(0.1)
