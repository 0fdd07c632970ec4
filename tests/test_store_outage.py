"""Redis outages against a real cfnd and a real redis-server we kill or freeze: every op
that needs Redis answers ``store_unavailable`` within a short bound (never
``internal_error``, never a hang), with no traceback in cfnd's log, and everything
works again once Redis is back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cfn_client.api import Client
from cfn_client.wire.errors import EXIT_STORE_UNAVAILABLE, CfnError
from cfn_client.wire.ops import OPS
from tests.daemon_proc import CFNCTL, CfndProcess
from tests.redis_servers import RedisProcess

CfndFactory = Callable[..., CfndProcess]

# Ops that report an outage instead of failing with it (ping, status, doctor...).
STORE_FREE = {"hello", "ping", "status", "doctor", "config.show", "config.validate"}
STREAMS = {op for op, spec in OPS.items() if spec.streaming}

# Minimal valid arguments for every op: the outage must be what answers.
ARGS: dict[str, dict[str, Any]] = {
    "config.set": {"key": "loop.max_loop2", "value": "4"},
    "config.reset": {"key": "loop.max_loop2"},
    "swarm.init": {"topology": "mesh", "max_agents": 2, "name": "s2"},
    "swarm.list": {},
    "swarm.status": {"swarm": "s1"},
    "swarm.scale": {"swarm": "s1", "agents": 1},
    "swarm.destroy": {"swarm": "s1"},
    "swarm.reset": {"swarm": "s1"},
    "swarm.broadcast": {"swarm": "s1", "message": "hi"},
    "agent.create": {"swarm": "s1", "type": "shell"},
    "agent.list": {"swarm": "s1"},
    "agent.status": {"swarm": "s1", "agent": "a1"},
    "agent.terminate": {"swarm": "s1", "agent": "a1"},
    "agent.restart": {"swarm": "s1", "agent": "a1"},
    "agent.reset": {"swarm": "s1", "agent": "a1"},
    "agent.send": {"swarm": "s1", "from_agent": "a1", "to_agent": "a2", "message": "hi"},
    "task.submit": {"swarm": "s1", "text": "echo hi"},
    "task.submit_many": {"swarm": "s1", "tasks": [{"text": "echo hi"}]},
    "task.list": {"swarm": "s1"},
    "task.status": {"swarm": "s1", "task": "t1"},
    "task.cancel": {"swarm": "s1", "task": "t1"},
    "task.retry": {"swarm": "s1", "task": "t1"},
    "task.wait": {"swarm": "s1", "tasks": ["t1"], "timeout_s": 30},
    "task.clean": {"swarm": "s1"},
    "task.upload": {"swarm": "s1", "data": "echo hi"},
    "task.read": {"swarm": "s1", "task": "t1", "field": "output"},
    "dlq.list": {"swarm": "s1"},
    "dlq.requeue": {"swarm": "s1"},
    "events.list": {"swarm": "s1"},
    "events.follow": {"swarm": "s1"},
    "loop.start": {"swarm": "s1", "task": "do it"},
    "loop.status": {"swarm": "s1", "run": "r1"},
    "loop.list": {"swarm": "s1"},
    "loop.follow": {"swarm": "s1", "run": "r1"},
    "loop.approve": {"swarm": "s1", "run": "r1"},
    "loop.reject": {"swarm": "s1", "run": "r1"},
    "loop.extend": {"swarm": "s1", "run": "r1", "max_loop2": 3},
    "loop.cancel": {"swarm": "s1", "run": "r1"},
    "loop.backlog": {"swarm": "s1", "run": "r1"},
    "loop.apply": {"swarm": "s1", "run": "r1"},
    "loop.clean": {"swarm": "s1", "run": "r1"},
    "epic.start": {"swarm": "s1", "epic": {"name": "e", "phases": [{"name": "p"}]}},
    "epic.status": {"swarm": "s1", "epic_id": "e1"},
    "epic.list": {"swarm": "s1"},
    "team.role_create": {"name": "r", "description": "d"},
    "team.assign": {"user": "u", "role": "r"},
    "team.list": {},
    "team.sync": {},
    "metrics.agents": {"swarm": "s1"},
    "agent.debug": {"swarm": "s1", "agent": "a1"},
    "logs.export": {},
    "snapshot.export": {},
    "snapshot.import": {"data": "{}", "commit": True},
    "audit.search": {"text": "x"},
    "redis.info": {},
    # Needs no Redis itself, but is not in the router's STORE_FREE_OPS: refused too.
    "web.login": {},
}


def test_every_op_has_outage_args() -> None:
    assert set(ARGS) == set(OPS) - STORE_FREE


def _outcome(client: Client, op: str) -> tuple[str, float]:
    started = time.monotonic()
    try:
        if op in STREAMS:
            with client.stream(op, ARGS[op], timeout_s=30) as events:
                for _ in events:
                    break
        else:
            client.call(op, **ARGS[op])
        outcome = "ok"
    except CfnError as err:
        outcome = err.instance_code
    return outcome, time.monotonic() - started


def _log_problems(proc: CfndProcess) -> list[str]:
    bad = []
    for line in proc.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if "Traceback" in line:
                bad.append(line)
            continue
        # Per request (background loops are supervised elsewhere and log their own).
        if entry.get("event") in ("request_failed", "connection_failed") or (
            entry.get("event") == "request" and entry.get("outcome") == "internal_error"
        ):
            bad.append(line[:300])
    return bad


def _wait_available(proc: CfndProcess, timeout_s: float = 30.0) -> None:
    """Until cfnd's health probe has seen Redis again (polling its status, bounded)."""
    deadline = time.monotonic() + timeout_s
    with Client(proc.socket, timeout_s=30) as client:
        while not client.status().store.available:
            assert time.monotonic() < deadline, "Redis never became available again"
            time.sleep(0.05)


@pytest.fixture
def outage_cfnd(
    cfnd_factory: CfndFactory, redis_factory: Callable[..., RedisProcess]
) -> Iterator[tuple[CfndProcess, RedisProcess]]:
    server = redis_factory(tcp=True)
    proc = cfnd_factory(
        "--redis-url", server.url, env={"CFN_REDIS__STALL_TIMEOUT_S": "1", "CFN_LOG_LEVEL": "info"}
    )
    with Client(proc.socket, timeout_s=30) as client:
        client.swarm_init(topology="mesh", max_agents=2, name="s1")
    yield proc, server
    if server.pid is not None:
        os.kill(server.pid, signal.SIGCONT)


def _all_ops_unavailable(proc: CfndProcess, bound_s: float) -> dict[str, tuple[str, float]]:
    with Client(proc.socket, timeout_s=30) as client:
        seen = {op: _outcome(client, op) for op in sorted(ARGS)}
        assert client.ping().pong  # the daemon itself still answers at once
    wrong = {op: r for op, r in seen.items() if r[0] != "store_unavailable" or r[1] > bound_s}
    assert not wrong, wrong
    return seen


def test_redis_killed_every_op_answers_store_unavailable(
    outage_cfnd: tuple[CfndProcess, RedisProcess],
) -> None:
    proc, server = outage_cfnd
    server.kill()
    _all_ops_unavailable(proc, bound_s=2.0)
    res = subprocess.run(
        [*CFNCTL, "--socket", str(proc.socket), "task", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == EXIT_STORE_UNAVAILABLE, res
    assert "store_unavailable" in res.stderr
    assert "Traceback" not in res.stderr
    assert _log_problems(proc) == []

    server.start()  # empty: the killed server kept no data
    _wait_available(proc)
    with Client(proc.socket, timeout_s=30) as client:
        client.swarm_init(topology="mesh", max_agents=2, name="s3")
        assert [s.name for s in client.swarm_list().swarms] == ["s3"]
    assert proc.stop() == 0


def test_redis_frozen_ops_answer_within_the_stall_bound(
    outage_cfnd: tuple[CfndProcess, RedisProcess],
) -> None:
    proc, server = outage_cfnd
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    # Requests in flight when Redis freezes are answered once the stall is seen (1 s
    # probe timeout + 1 s health interval), later ones at once; generous for load.
    seen = _all_ops_unavailable(proc, bound_s=6.0)
    later = [elapsed for _, elapsed in seen.values()][5:]
    assert max(later) < 2.0, seen
    assert _log_problems(proc) == []
    os.kill(server.pid, signal.SIGCONT)
    _wait_available(proc)
    with Client(proc.socket, timeout_s=30) as client:
        assert [s.name for s in client.swarm_list().swarms] == ["s1"]
    assert proc.stop() == 0
