"""``cfnctl logs export`` against a real cfnd on the shared Redis: events and audit
entries, CSV that Python's csv reader reads back exactly, JSON lines, time bounds and
paging through more entries than one page holds."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from cfn_client.wire.errors import InvalidArgs
from cfn_client.wire.schema.logs import LOG_COLUMNS
from cfn_daemon.core.log_entries import decode_cursor, from_audit
from cfn_daemon.store.keys import Keys
from tests.cli_support import Swarm, run, shared_cfnd, swarm
from tests.conftest import SHARED_REDIS
from tests.daemon_proc import CfndProcess

__all__ = ["shared_cfnd", "swarm"]  # fixtures, imported for pytest

TRICKY = 'a, "quoted" value,\nsecond line\r\nthird; ünïcode'


def _keys(cfnd: CfndProcess) -> Keys:
    return Keys(cfnd.env["CFN_KEY_PREFIX"])


def _audit(r: Any, keys: Keys, swarm: str, op: str, *, entry_id: str = "*", **args: Any) -> str:
    """One audit entry of the shape cfnd writes (t_ms, uid, user, role, op, args, ...)."""
    t_ms = int(entry_id.split("-")[0]) if entry_id != "*" else int(time.time() * 1000)
    fields = {
        "t_ms": t_ms, "uid": 1000, "user": "alice", "role": "operator", "op": op,
        "args": json.dumps({"swarm": swarm, **args}), "outcome": "ok", "code": "",
    }  # fmt: skip
    return str(r.xadd(keys.audit, fields, id=entry_id))


def test_csv_round_trips_commas_quotes_and_newlines(
    swarm: Swarm, shared_cfnd: CfndProcess, tmp_path: Path
) -> None:
    keys = _keys(shared_cfnd)
    r = redis.Redis.from_url(SHARED_REDIS, decode_responses=True)
    try:
        # A swarm event with awkward text (as queue_events writes it) and an audit entry.
        r.xadd(
            keys.events(swarm.name),
            {"type": "message.broadcast", "ts": int(time.time() * 1000),
             "data": json.dumps({"agent": "a1", "task": "t1", "message": TRICKY})},
        )  # fmt: skip
        # Its task argument lands in a column of its own, unescaped: CSV quoting only.
        _audit(r, keys, swarm.name, "task.submit", task=TRICKY, text=TRICKY)
    finally:
        r.close()
    out = tmp_path / "logs.csv"
    code, _, err = swarm.cli("logs", "export", "--format=csv", "--output", str(out))
    assert code == 0, err
    assert "exported" in err
    raw = out.read_bytes()
    assert raw.startswith(b"time,source,swarm,kind,agent,task,user,outcome,detail\r\n")
    # RFC 4180: the field quoted, quotes doubled, the newlines kept inside it.
    assert b'"a, ""quoted"" value,\nsecond line\r\nthird' in raw
    rows = list(csv.reader(io.StringIO(raw.decode(), newline="")))
    assert tuple(rows[0]) == LOG_COLUMNS
    body = [dict(zip(LOG_COLUMNS, row, strict=True)) for row in rows[1:]]
    assert {b["swarm"] for b in body} == {swarm.name}  # --swarm (from the group option)
    created = next(b for b in body if b["kind"] == "swarm.created")
    assert created["source"] == "event" and created["time"].endswith("Z")
    event = next(b for b in body if b["kind"] == "message.broadcast")
    assert (event["agent"], event["task"]) == ("a1", "t1")
    assert json.loads(event["detail"])["message"] == TRICKY
    audit = next(b for b in body if b["source"] == "audit")
    assert (audit["kind"], audit["user"], audit["outcome"], audit["task"]) == (
        "task.submit", "alice", "ok", TRICKY,
    )  # fmt: skip
    detail = json.loads(audit["detail"])
    assert detail["args"]["text"] == TRICKY and detail["role"] == "operator"


def test_json_lines_to_stdout_with_time_bounds(swarm: Swarm, shared_cfnd: CfndProcess) -> None:
    keys = _keys(shared_cfnd)
    r = redis.Redis.from_url(SHARED_REDIS, decode_responses=True)
    try:
        # Two entries 5 s apart (explicit ids, after anything the shared stream holds).
        last = r.xrevrange(keys.audit, count=1)
        base = max(int(time.time() * 1000), int(last[0][0].split("-")[0]) if last else 0) + 1000
        early = _audit(r, keys, swarm.name, "swarm.init", entry_id=f"{base}-0")
        late = _audit(r, keys, swarm.name, "task.cancel", entry_id=f"{base + 5000}-0")
    finally:
        r.close()

    def ids(*flags: str) -> list[str]:
        code, out, err = swarm.cli("logs", "export", "--format", "json", *flags, "--output", "-")
        assert code == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert all(e["swarm"] == swarm.name for e in lines)
        # logs.export is itself audited (admin op): its own entries are not the test's.
        return [e["id"] for e in lines if e["source"] == "audit" and e["kind"] != "logs.export"]

    assert ids("--source", "audit") == [early, late]
    assert ids("--since", str(base + 1)) == [late]
    assert ids("--until", str(base + 1)) == [early]
    assert ids("--since", str(base), "--until", str(base)) == [early]  # both inclusive
    assert ids("--source", "event") == []
    code, out, err = swarm.cli("logs", "export", "--format", "json", "--since", "1d",
                               "--output", "-")  # fmt: skip
    assert code == 0, err
    kinds = {json.loads(line)["kind"] for line in out.splitlines()}
    assert {"swarm.created", "swarm.init", "task.cancel"} <= kinds  # events and audit
    code, _, err = swarm.cli("logs", "export", "--since", "1h", "--until", "2h", "--output", "-")
    assert code == 1 and "before since" in err


def test_export_pages_through_more_entries_than_a_page(
    swarm: Swarm, shared_cfnd: CfndProcess, tmp_path: Path
) -> None:
    keys = _keys(shared_cfnd)
    r = redis.Redis.from_url(SHARED_REDIS, decode_responses=True)
    try:
        with r.pipeline(transaction=False) as pipe:
            for i in range(2500):
                _audit(pipe, keys, swarm.name, "task.submit", task=f"t{i}")
            pipe.execute()
    finally:
        r.close()
    out = tmp_path / "all.csv"
    code, _, err = swarm.cli("logs", "export", "--source", "audit", "--output", str(out))
    assert code == 0, err
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    # Only the test's entries: cfnd audits the swarm fixture's own ops too.
    tasks = [row[5] for row in rows if row[3] == "task.submit" and row[6] == "alice"]
    assert tasks == [f"t{i}" for i in range(2500)]  # all, once each, in order
    with swarm.client(timeout_s=30) as cfn:
        page = cfn.logs_export(swarm.name, sources=["audit"], limit=1000)
        assert len(page.entries) == 1000 and page.next_cursor is not None


def test_bad_cursor_and_audit_mapping_unit() -> None:
    with pytest.raises(InvalidArgs, match="cursor"):
        decode_cursor("nonsense")
    with pytest.raises(InvalidArgs):
        decode_cursor("event|s1|not-an-id")
    entry = from_audit(
        "5-1",
        {"t_ms": "5", "user": "bob", "op": "swarm.destroy", "args": '{"swarm": "s1"}',
         "outcome": "denied", "code": "permission_denied", "uid": "7", "extra": "x"},
    )  # fmt: skip
    assert (entry.swarm, entry.kind, entry.outcome, entry.ts_ms) == ("s1", "swarm.destroy",
                                                                     "denied", 5)  # fmt: skip
    assert entry.detail == {"uid": "7", "code": "permission_denied", "args": {"swarm": "s1"},
                            "extra": "x"}  # fmt: skip


def test_daemon_wide_alerts_are_exported_without_swarm(
    swarm: Swarm, shared_cfnd: CfndProcess
) -> None:
    keys = _keys(shared_cfnd)
    r = redis.Redis.from_url(SHARED_REDIS, decode_responses=True)
    marker = f"alert-{swarm.name}"
    try:  # an alert as api/alerts.py writes it to the daemon's own events stream
        r.xadd(
            keys.daemon_events,
            {"type": "alert.denial_burst", "ts": int(time.time() * 1000),
             "data": json.dumps({"message": marker})},
        )  # fmt: skip
    finally:
        r.close()
    code, out, err = run(  # no --swarm: every stream, the daemon's own included
        shared_cfnd.socket, "logs", "export", "--format", "json", "--source", "event",
        "--since", "10m", "--output", "-",
    )  # fmt: skip
    assert code == 0, err
    alerts = [json.loads(line) for line in out.splitlines() if marker in line]
    assert [(a["kind"], a["swarm"]) for a in alerts] == [("alert.denial_burst", "")]
