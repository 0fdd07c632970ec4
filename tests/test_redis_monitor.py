"""The Redis health monitor against real redis-servers: a private server with the
guide's risky settings (``maxmemory-policy allkeys-lru``, AOF off) raises alerts on
``cfn:alerts`` (the test SUBSCRIBEs before cfnd starts), once per ok→bad edge;
``cfnctl redis info`` shows the figures; with CONFIG renamed away it says what it
could not check."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.daemon_proc import CfndProcess, cfnctl
from tests.redis_servers import RedisFactory
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

FAST = {"CFN_MONITOR__INTERVAL_S": "0.2"}


def _collect(
    sub: Any, seen: list[dict[str, Any]], done: Callable[[], bool], what: str, timeout_s: float = 30
) -> None:
    """Add published alerts to ``seen`` until ``done()`` (bounded by ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"no {what} in {timeout_s}s; saw {seen}"
        msg = sub.get_message(timeout=0.5)
        if msg is not None and msg["type"] == "message":
            seen.append(json.loads(msg["data"]))


def _count(seen: list[dict[str, Any]], kind: str) -> int:
    return sum(a["kind"] == kind for a in seen)


def _info(proc: CfndProcess) -> dict[str, Any]:
    out = cfnctl(proc.socket, "redis", "info", "--json")
    assert out.returncode == 0, out
    info: dict[str, Any] = json.loads(out.stdout)
    return info


def test_risky_redis_settings_raise_alerts_once(
    redis_factory: RedisFactory, cfnd_factory: Callable[..., CfndProcess], key_prefix: str
) -> None:
    server = redis_factory(extra_conf=["maxmemory-policy allkeys-lru", "maxmemory 512mb"])
    client: redis.Redis = server.client()
    sub = client.pubsub()
    sub.subscribe(f"{key_prefix}:alerts")
    wait_until(lambda: sub.get_message(timeout=0.5), 10, "the subscribe reply")
    try:
        proc = cfnd_factory("--redis-url", server.url, env=FAST)
        seen: list[dict[str, Any]] = []
        both = {"health.eviction_policy", "health.aof_off"}
        _collect(sub, seen, lambda: both <= {a["kind"] for a in seen}, "policy and AOF alerts")
        policy = next(a for a in seen if a["kind"] == "health.eviction_policy")
        assert policy["severity"] == "critical" and "allkeys-lru" in policy["message"]
        assert policy["fields"]["maxmemory_policy"] == "allkeys-lru"
        # The figures, and the alerts still in effect.
        info = _info(proc)
        assert info["maxmemory_policy"] == "allkeys-lru" and info["aof_enabled"] is False
        assert info["maxmemory_bytes"] == 512 * 1024 * 1024 and 0 < info["memory_ratio"] < 0.1
        assert info["version"] and info["connected_clients"] >= 1
        assert {a["kind"] for a in info["alerts"]} == {"health.eviction_policy", "health.aof_off"}
        assert info["rdb_saves"] == "" and info["unchecked"] == []
        table = cfnctl(proc.socket, "redis", "info")
        assert "eviction policy: allkeys-lru" in table.stdout, table.stdout
        assert "critical health.eviction_policy" in table.stdout
        # Back to normal: the alert clears (logged), and comes back only on a new edge.
        client.config_set("maxmemory-policy", "noeviction")
        wait_until(
            lambda: any(e.get("event") == "alert_cleared" for e in proc.log_events()),
            30,
            "the eviction policy alert to clear",
        )
        assert {a["kind"] for a in _info(proc)["alerts"]} == {"health.aof_off"}
        client.config_set("maxmemory-policy", "volatile-lru")
        policy_alerts = lambda: _count(seen, "health.eviction_policy") >= 2  # noqa: E731
        _collect(sub, seen, policy_alerts, "a second eviction policy alert")

        # One alert per edge: five polls later (five INFO sections each), still two policy
        # alerts and one AOF alert.
        def info_calls() -> int:
            return int(client.info("commandstats")["cmdstat_info"]["calls"])

        target = info_calls() + 25
        wait_until(lambda: info_calls() >= target, 30, "five more polls")
        for _ in range(100):  # drain what was published meanwhile (bounded)
            msg = sub.get_message(timeout=0.2)
            if msg is None:
                break
            if msg["type"] == "message":
                seen.append(json.loads(msg["data"]))
        polls = sum(1 for e in proc.log_events() if e.get("event") == "alert_cleared") + 1
        assert _count(seen, "health.aof_off") == 1 and _count(seen, "health.eviction_policy") == 2
        logged = sum(1 for e in proc.log_events() if e.get("event") == "alert")
        assert logged == len(seen) == 3 and polls == 2, (logged, seen)
        events = client.xrange(f"{key_prefix}:events")
        assert {f[b"type"] for _, f in events} >= {b"alert.health.eviction_policy"}
    finally:
        sub.close()
        client.close()


def test_renamed_config_is_reported_as_unchecked(
    redis_factory: RedisFactory, cfnd_factory: Callable[..., CfndProcess]
) -> None:
    server = redis_factory(extra_conf=['rename-command CONFIG ""', "appendonly yes"])
    proc = cfnd_factory("--redis-url", server.url, env=FAST)
    info = _info(proc)
    assert info["rdb_saves"] is None
    assert any(u.startswith("rdb saves") for u in info["unchecked"]), info
    # INFO still answers: the checks it allows are made.
    assert info["maxmemory_policy"] == "noeviction" and info["aof_enabled"] is True
    assert info["alerts"] == []


def test_info_and_config_denied_by_acl_are_listed_not_fatal(
    redis_factory: RedisFactory, cfnd_factory: Callable[..., CfndProcess]
) -> None:
    """An ACL user without INFO or CONFIG: cfnd runs, the monitor keeps polling (no crash
    loop), and ``redis info`` says what it could not check instead of guessing."""
    acl = "user cfnd on >mon-pw-9 ~* &* +@all -info -config"
    server = redis_factory(extra_conf=[acl])
    env = {**FAST, "CFN_REDIS__USERNAME": "cfnd", "CFN_REDIS_PASSWORD": "mon-pw-9"}
    proc = cfnd_factory("--redis-url", server.url, env=env)
    info = _info(proc)
    assert info["version"] is None and info["maxmemory_policy"] is None
    assert info["aof_enabled"] is None and info["alerts"] == []
    notes = "\n".join(info["unchecked"])
    for part in ("INFO memory", "INFO persistence", "rdb saves", "eviction policy", "aof"):
        assert part in notes, notes
    client: redis.Redis = server.client()
    try:
        # Polls go on (the monitor did not give up): the denied INFO calls keep coming.
        def denied_info() -> int:
            log = client.acl_log(count=1000)  # similar entries are merged: add their counts
            return sum(int(e.get("count", 1)) for e in log if e.get("object") == "info")

        target = denied_info() + 10
        wait_until(lambda: denied_info() >= target, 30, "more monitor polls")
    finally:
        client.close()
    assert not any(e.get("event") == "child_failed" for e in proc.log_events())
