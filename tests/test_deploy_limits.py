"""``limits.max_swarms`` and a swarm's agent cap hold under concurrent requests: two
real cfnd processes sharing one Redis race to create swarms, and remote cfn-agent
processes race to join a full swarm; the check and the change are one Lua script."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from cfn_client.api import Client
from cfn_client.wire.errors import CfnError, Conflict
from tests.conftest import SHARED_REDIS
from tests.daemon_proc import BIN, CfndProcess
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def _init(proc: CfndProcess, name: str) -> str:
    with Client(proc.socket, timeout_s=30) as cfn:
        try:
            cfn.swarm_init("mesh", 4, name=name)
        except Conflict as err:
            return err.message
    return "ok"


def test_two_daemons_racing_never_pass_max_swarms(
    cfnd_factory: Callable[..., CfndProcess], key_prefix: str
) -> None:
    env = {"CFN_LIMITS__MAX_SWARMS": "3"}
    a = cfnd_factory("--redis-url", SHARED_REDIS, env=env, name="a")
    b = cfnd_factory("--redis-url", SHARED_REDIS, env=env, name="b")
    names = [f"s{i}" for i in range(10)]
    with ThreadPoolExecutor(len(names)) as pool:
        outcomes = list(pool.map(lambda i: _init((a, b)[i % 2], names[i]), range(len(names))))
    assert outcomes.count("ok") == 3, outcomes
    refused = [o for o in outcomes if o != "ok"]
    assert all("already has 3 swarms (limits.max_swarms)" in o for o in refused), refused
    client = redis.Redis.from_url(SHARED_REDIS)
    try:
        assert client.scard(f"{key_prefix}:swarms") == 3
    finally:
        client.close()
    assert a.stop() == 0
    assert b.stop() == 0


@pytest.fixture
def agents() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)  # reaps it and closes its pipes


def test_concurrent_remote_agents_never_pass_the_swarm_cap(
    cfnd_factory: Callable[..., CfndProcess],
    key_prefix: str,
    agents: list[subprocess.Popen[str]],
) -> None:
    proc = cfnd_factory(
        "--redis-url", SHARED_REDIS, env={"CFN_AGENTS__HEARTBEAT_INTERVAL_S": "0.5"}
    )
    with Client(proc.socket, timeout_s=30) as cfn:
        cfn.swarm_init("mesh", 2, name="capped")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFN_")}
    argv = [str(BIN / "cfn-agent"), "--redis", SHARED_REDIS, "--swarm", "capped"]
    argv += ["--type", "shell", "--key-prefix", key_prefix]
    for _ in range(5):
        agents.append(
            subprocess.Popen(
                argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    # Three of the five are refused and exit; the two that joined keep running.
    wait_until(lambda: sum(p.poll() is not None for p in agents) >= 3, 60, "3 refused agents")
    refused = [p for p in agents if p.poll() is not None]
    assert len(refused) == 3
    for p in refused:
        _, err = p.communicate(timeout=10)
        assert p.returncode == 2, err
        assert "swarm capped is full: 2 live agents, at most 2" in err
    with Client(proc.socket, timeout_s=30) as cfn:
        live = wait_until(
            lambda: [a for a in cfn.agent_list(swarm="capped").agents if a.status == "idle"],
            30,
            "the two agents that joined",
        )
        assert len(live) == 2
        assert sum(a.status in ("starting", "idle", "busy") for a in cfn.agent_list().agents) == 2
        # A local spawn on the full swarm is refused too (not only remote joins).
        with pytest.raises(CfnError) as err:
            cfn.agent_create("shell", count=1, swarm="capped")
        assert "at most 2 agents" in err.value.message
        cfn.swarm_destroy("capped", force=True)  # the live agents stop
    assert proc.stop() == 0
