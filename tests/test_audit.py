"""The audit stream and alerts against a real cfnd on the shared Redis: every mutating op
and every denied request is one entry of ``cfn:audit`` (redacted), ``cfnctl audit
search`` finds them by range and filters, and critical events (a burst of denials, a
destroy, an auth change) publish on ``cfn:alerts`` (the test SUBSCRIBEs).

Refused callers are real: cfnctl runs as ``nobody`` through ``setpriv``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.cli_support import NEEDS_ROOT, cfnctl_as, own_cfnd
from tests.daemon_proc import CfndProcess
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

NOBODY = 65534
SHARED = os.environ.get("CFN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
FIELDS = {"t_ms", "uid", "user", "role", "op", "args", "outcome", "code"}
PLANTED = "sk-ant-api03-" + "Qm9vQmFyQmF6" * 3  # a secret the audit must never keep
CONFIG = "[daemon]\nsocket_mode = 0o666\n\n[auth]\nrate_per_s = 0\n"
BURST = 4


@pytest.fixture(scope="module")
def open_cfnd() -> Iterator[CfndProcess]:
    """A cfnd any uid can reach (socket 0666): refusals come from cfnd, and are audited."""
    env = {
        "CFN_LIMITS__MAX_SWARMS": "1000",
        "CFN_AUDIT__DENIAL_BURST": str(BURST),
        "CFN_AUDIT__DENIAL_WINDOW_S": "600",
        "CFN_AGENTS__STOP_GRACE_S": "2",
    }
    with own_cfnd("cfnaud-", config=CONFIG, env=env) as proc:
        proc.workdir.parent.chmod(0o755)
        proc.workdir.chmod(0o755)
        yield proc


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(SHARED, socket_timeout=10)
    try:
        yield client
    finally:
        client.close()


def prefix(d: CfndProcess) -> str:
    return d.env["CFN_KEY_PREFIX"]


def search(d: CfndProcess, *flags: str) -> list[dict[str, Any]]:
    out = cfnctl_as(d, None, 0, "audit", "search", "--json", *flags)
    assert out.returncode == 0, out
    entries: list[dict[str, Any]] = json.loads(out.stdout)["entries"]
    return entries


def raw_entries(r: redis.Redis, d: CfndProcess) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in r.xrange(f"{prefix(d)}:audit")
    ]


class Alerts:
    """A SUBSCRIBE to ``cfn:alerts``, made before the test acts."""

    def __init__(self, r: redis.Redis, d: CfndProcess) -> None:
        self.pubsub = r.pubsub()
        self.pubsub.subscribe(f"{prefix(d)}:alerts")
        wait_until(lambda: self.pubsub.get_message(timeout=0.5), 10, "the subscribe reply")
        self.seen: list[dict[str, Any]] = []

    def wait(self, kind: str, timeout_s: float = 30.0, **fields: Any) -> dict[str, Any]:
        """The first alert of ``kind`` (with ``fields``), bounded by ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = self.pubsub.get_message(timeout=0.5)
            if msg is not None and msg["type"] == "message":
                self.seen.append(json.loads(msg["data"]))
            for alert in self.seen:
                if alert["kind"] == kind and all(
                    alert["fields"].get(k) == v for k, v in fields.items()
                ):
                    return alert
        raise AssertionError(f"no {kind} alert in {timeout_s}s; saw {self.seen}")

    def close(self) -> None:
        self.pubsub.close()


@pytest.fixture
def alerts(r: redis.Redis, open_cfnd: CfndProcess) -> Iterator[Alerts]:
    sub = Alerts(r, open_cfnd)
    try:
        yield sub
    finally:
        sub.close()


@NEEDS_ROOT
def test_a_refused_uid_gets_exit_4_and_an_audit_entry(
    open_cfnd: CfndProcess, r: redis.Redis
) -> None:
    out = cfnctl_as(open_cfnd, NOBODY, NOBODY, "status")
    assert out.returncode == 4, out
    assert "has role none" in out.stderr, out.stderr
    entries = search(open_cfnd, "--user", "nobody", "--since", "10m")
    denied = [e for e in entries if e["outcome"] == "denied" and e["uid"] == NOBODY]
    assert denied, entries
    assert denied[0]["code"] == "permission_denied" and denied[0]["role"] == "none"
    # The stream's entries carry exactly the fields `logs export` reads.
    mine = [e for e in raw_entries(r, open_cfnd) if e["uid"] == str(NOBODY)]
    assert mine and set(mine[0]) == FIELDS, mine
    assert int(mine[0]["t_ms"]) > 0


def test_mutating_ops_are_audited_with_redacted_args(
    open_cfnd: CfndProcess, r: redis.Redis
) -> None:
    name = f"aud{uuid.uuid4().hex[:8]}"
    assert (
        cfnctl_as(open_cfnd, None, 0, "swarm", "init", "mesh", "2", "--name", name).returncode == 0
    )
    try:
        text = f"export ANTHROPIC_API_KEY={PLANTED}; echo hi"
        sent = cfnctl_as(open_cfnd, None, 0, "--swarm", name, "run", "--type", "shell", text)
        assert sent.returncode == 0, sent
        # Reads are not audited.
        assert cfnctl_as(open_cfnd, None, 0, "--swarm", name, "task", "list").returncode == 0
    finally:
        cfnctl_as(open_cfnd, None, 0, "--swarm", name, "swarm", "destroy", "--force")
    entries = search(open_cfnd, "--text", name)
    ops = [e["op"] for e in entries]
    assert ops[:3] == ["swarm.destroy", "task.submit", "swarm.init"], ops  # newest first
    assert "task.list" not in ops
    submit = entries[1]
    assert (submit["user"], submit["role"], submit["outcome"], submit["code"]) == (
        "root", "admin", "ok", "",
    )  # fmt: skip
    args = json.loads(submit["args"])
    assert args["swarm"] == name and "[REDACTED]" in args["text"] and "echo hi" in args["text"]
    everything = json.dumps(raw_entries(r, open_cfnd))
    assert PLANTED not in everything and "Qm9vQmFy" not in everything


def test_audit_search_ranges_filters_and_table(open_cfnd: CfndProcess) -> None:
    name = f"srch{uuid.uuid4().hex[:8]}"
    before_ms = int(time.time() * 1000) - 1
    for _ in range(3):
        made = cfnctl_as(open_cfnd, None, 0, "--swarm", name, "swarm", "destroy")
        assert made.returncode == 1 and "not_found" in made.stderr, made  # audited: error
    found = search(open_cfnd, "--op", "swarm.destroy", "--text", name)
    assert len(found) == 3 and {e["outcome"] for e in found} == {"error"}
    assert {e["code"] for e in found} == {"not_found"}
    assert [e["t_ms"] for e in found] == sorted((e["t_ms"] for e in found), reverse=True)
    assert len(search(open_cfnd, "--text", name, "--limit", "1")) == 1
    assert len(search(open_cfnd, "--op", "swarm", "--text", name)) == 3  # an area
    assert search(open_cfnd, "--op", "task", "--text", name) == []
    assert search(open_cfnd, "--text", name, "--until", str(before_ms)) == []
    until_ms = str(int(time.time() * 1000) + 1000)
    assert (
        len(search(open_cfnd, "--text", name, "--since", str(before_ms), "--until", until_ms)) == 3
    )
    assert len(search(open_cfnd, "--text", name, "--since", "1h")) == 3
    assert search(open_cfnd, "--text", name, "--user", "nobody") == []
    table = cfnctl_as(open_cfnd, None, 0, "audit", "search", "--text", name)
    assert table.returncode == 0 and table.stdout.split()[:3] == ["TIME", "USER", "UID"], table
    assert table.stdout.count("swarm.destroy") == 3
    bad = cfnctl_as(open_cfnd, None, 0, "audit", "search", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "duration" in bad.stderr, bad
    later = cfnctl_as(open_cfnd, None, 0, "audit", "search", "--since", "1m", "--until", "1h")
    assert later.returncode == 1 and "expected since <= until" in later.stderr, later


@NEEDS_ROOT
def test_audit_search_needs_admin(open_cfnd: CfndProcess) -> None:
    # nobody in the socket's group (root's): operator, not admin.
    out = cfnctl_as(open_cfnd, NOBODY, 0, "audit", "search")
    assert out.returncode == 4 and "needs role admin" in out.stderr, out
    # A denial inside a handler (the exec right) is audited too, with the caller's role.
    name = f"ex{uuid.uuid4().hex[:8]}"
    assert (
        cfnctl_as(open_cfnd, None, 0, "swarm", "init", "mesh", "2", "--name", name).returncode == 0
    )
    try:
        shell = cfnctl_as(open_cfnd, NOBODY, 0, "--swarm", name, "run", "--type", "shell", "id")
        assert shell.returncode == 4 and "exec" in shell.stderr, shell
    finally:
        cfnctl_as(open_cfnd, None, 0, "--swarm", name, "swarm", "destroy", "--force")
    denied = search(open_cfnd, "--op", "task.submit", "--text", name, "--user", str(NOBODY))
    assert [(e["outcome"], e["role"]) for e in denied] == [("denied", "operator")], denied
    assert search(open_cfnd, "--op", "audit.search", "--user", "nobody")[0]["outcome"] == "denied"


@NEEDS_ROOT
def test_a_burst_of_denials_raises_one_alert(
    open_cfnd: CfndProcess, alerts: Alerts, r: redis.Redis
) -> None:
    uid = 4000 + os.getpid() % 1000  # unknown: role none, refused
    for _ in range(BURST):
        assert cfnctl_as(open_cfnd, uid, uid, "ping").returncode == 4
    alert = alerts.wait("audit.denial_burst", uid=uid)
    assert alert["severity"] == "critical" and str(uid) in alert["message"]
    events = r.xrange(f"{prefix(open_cfnd)}:events")
    assert any(f[b"type"] == b"alert.audit.denial_burst" for _, f in events)
    # One alert per burst, not one per further denial.
    assert cfnctl_as(open_cfnd, uid, uid, "ping").returncode == 4
    burst_events = [
        f for _, f in r.xrange(f"{prefix(open_cfnd)}:events")
        if f[b"type"] == b"alert.audit.denial_burst" and str(uid).encode() in f[b"data"]
    ]  # fmt: skip
    assert len(burst_events) == 1


def test_destroy_and_auth_changes_raise_alerts(open_cfnd: CfndProcess, alerts: Alerts) -> None:
    name = f"alr{uuid.uuid4().hex[:8]}"
    assert (
        cfnctl_as(open_cfnd, None, 0, "swarm", "init", "mesh", "2", "--name", name).returncode == 0
    )
    assert (
        cfnctl_as(open_cfnd, None, 0, "--swarm", name, "swarm", "destroy", "--force").returncode
        == 0
    )
    destroyed = alerts.wait("swarm.destroyed", op="swarm.destroy")
    assert name in destroyed["message"] and destroyed["fields"]["user"] == "root"
    role = f"r{uuid.uuid4().hex[:6]}"
    made = cfnctl_as(
        open_cfnd, None, 0, "team", "role-create", role, "Auditors", "--grants", "viewer"
    )
    assert made.returncode == 0, made
    changed = alerts.wait("auth.changed", op="team.role_create")
    assert role in changed["message"]
    # auth.* cannot change while cfnd runs: refused, audited as an error, no alert.
    setting = cfnctl_as(open_cfnd, None, 0, "config", "set", "auth.rate_burst", "50")
    assert setting.returncode != 0, setting
    refused = search(open_cfnd, "--op", "config.set", "--text", "auth.rate_burst")
    assert refused and refused[0]["outcome"] == "error", refused
    # Not every config change is an auth change.
    assert cfnctl_as(open_cfnd, None, 0, "config", "set", "loop.max_loop2", "4").returncode == 0
    assert cfnctl_as(open_cfnd, None, 0, "config", "reset", "loop.max_loop2").returncode == 0
    assert not any(a["fields"].get("args", {}).get("key") == "loop.max_loop2" for a in alerts.seen)
    assert any(e.get("event") == "alert" and e.get("kind") == "auth.changed"
               for e in open_cfnd.log_events())  # fmt: skip


def test_a_failing_audit_write_never_fails_the_request(
    open_cfnd: CfndProcess, r: redis.Redis
) -> None:
    key = f"{prefix(open_cfnd)}:audit"
    saved = f"{key}:saved-{uuid.uuid4().hex[:6]}"
    r.rename(key, saved)
    r.set(key, "not a stream")  # XADD answers WRONGTYPE
    try:
        name = f"wf{uuid.uuid4().hex[:8]}"
        made = cfnctl_as(open_cfnd, None, 0, "swarm", "init", "mesh", "2", "--name", name)
        assert made.returncode == 0, made
        assert (
            cfnctl_as(open_cfnd, None, 0, "--swarm", name, "swarm", "destroy", "--force").returncode
            == 0
        )
        failed = [e for e in open_cfnd.log_events() if e.get("event") == "audit_write_failed"]
        assert failed and "WRONGTYPE" in str(failed[-1].get("reason")), failed
    finally:
        r.delete(key)
        r.rename(saved, key)
