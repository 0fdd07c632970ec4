"""`swarm init TOPOLOGY N --test-mode [--ttl 30m]`: an ephemeral swarm, removed after its
TTL, when its cfnd stops cleanly, and by the next cfnd if its creator died (issue 11).
Against real cfnd processes; Redis is read directly to see what a stopped cfnd left."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator

import msgspec
import pytest
import redis

from cfn_client.api import Client
from cfn_client.wire.schema.swarm import SwarmInfo
from cfn_daemon.swarm import ephemeral
from tests.cli_support import run
from tests.conftest import SHARED_REDIS
from tests.daemon_proc import CfndProcess
from tests.waiting import wait_until

CfndFactory = Callable[..., CfndProcess]


@pytest.fixture
def shared_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(SHARED_REDIS)
    try:
        yield client
    finally:
        client.close()


def swarm_ids(proc: CfndProcess) -> list[str]:
    with Client(proc.socket, timeout_s=30) as cfn:
        return [s.id for s in cfn.swarm_list().swarms]


def stored_swarms(client: redis.Redis, key_prefix: str) -> set[str]:
    return {s.decode() for s in client.smembers(f"{key_prefix}:swarms")}


def test_decisions() -> None:
    base = SwarmInfo(
        id="t", name="t", topology="mesh", strategy="balanced", max_agents=2,
        status="active", created_ms=0,
    )  # fmt: skip
    eph = msgspec.structs.replace(base, ephemeral=True, expires_at_ms=1000, creator="h:/a")
    assert ephemeral.expired(eph, 1000) and not ephemeral.expired(eph, 999)
    assert not ephemeral.expired(base, 10**15)  # a normal swarm never expires
    assert ephemeral.stale_at_start(eph, "h:/a", 0)  # our predecessor made it, and died
    assert not ephemeral.stale_at_start(eph, "h:/b", 0)  # another live cfnd's
    assert ephemeral.own([eph, base], "h:/a") == ["t"]
    assert ephemeral.next_wake_s([eph], 500) == 0.5
    assert ephemeral.next_wake_s([base], 0) == ephemeral.MAX_WAKE_S


def test_test_mode_swarm_is_removed_after_its_ttl(cfnd_factory: CfndFactory) -> None:
    proc = cfnd_factory("--redis-url", SHARED_REDIS)
    sock = proc.socket
    assert run(sock, "swarm", "init", "mesh", "4", "--name", "keep")[0] == 0
    code, out, err = run(sock, "swarm", "init", "mesh", "3", "--test-mode", "--ttl", "1s",
                         "--name", "brief")  # fmt: skip
    assert code == 0, err
    assert "test mode: removed when cfnd stops, or in 1.0s" in out
    code, out, _ = run(sock, "--json", "swarm", "status", "brief")
    info = json.loads(out)["swarm"]
    assert (info["ephemeral"], info["expires_at_ms"] - info["created_ms"]) == (True, 1000)
    wait_until(lambda: swarm_ids(proc) == ["keep"], 20, "the test-mode swarm to expire")
    assert any(e.get("event") == "swarm_expired" for e in proc.log_events())
    # --ttl belongs to --test-mode, and has bounds.
    code, _, err = run(sock, "swarm", "init", "mesh", "3", "--ttl", "5m")
    assert (code, "--ttl is how long a --test-mode swarm lives" in err) == (2, True)
    code, _, err = run(sock, "swarm", "init", "mesh", "3", "--test-mode", "--ttl", "8d")
    assert (code, "at most 7d" in err) == (2, True)


def test_sigterm_of_cfnd_removes_its_test_mode_swarms(
    cfnd_factory: CfndFactory, shared_redis: redis.Redis, key_prefix: str
) -> None:
    proc = cfnd_factory("--redis-url", SHARED_REDIS)
    assert run(proc.socket, "swarm", "init", "mesh", "4", "--name", "keep")[0] == 0
    assert run(proc.socket, "swarm", "init", "mesh", "3", "--test-mode", "--name", "eph")[0] == 0
    assert stored_swarms(shared_redis, key_prefix) == {"keep", "eph"}
    assert proc.stop(signal.SIGTERM) == 0
    assert stored_swarms(shared_redis, key_prefix) == {"keep"}  # gone with its cfnd
    assert not shared_redis.exists(f"{key_prefix}:{{eph}}:state")


def test_restart_after_kill_9_removes_the_dead_cfnds_test_mode_swarms(
    cfnd_factory: CfndFactory, shared_redis: redis.Redis, key_prefix: str
) -> None:
    proc = cfnd_factory("--redis-url", SHARED_REDIS)
    assert run(proc.socket, "swarm", "init", "mesh", "4", "--name", "keep")[0] == 0
    assert run(proc.socket, "swarm", "init", "mesh", "3", "--test-mode", "--name", "eph")[0] == 0
    proc.stop(signal.SIGKILL)  # no clean stop: nothing removed it
    assert stored_swarms(shared_redis, key_prefix) == {"keep", "eph"}
    proc.notifications.clear()  # wait for this start's READY=1, not the last one's
    proc.start()  # the same state dir: its previous holder is certainly gone
    wait_until(lambda: swarm_ids(proc) == ["keep"], 30, "the orphaned test-mode swarm to go")
    assert stored_swarms(shared_redis, key_prefix) == {"keep"}
    assert any(e.get("event") == "swarm_ephemeral_reaped" for e in proc.log_events())
