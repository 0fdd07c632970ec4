"""``cfnctl snapshot export`` / ``import`` against a real cfnd, real cfn-agent processes
and the shared Redis: a round trip preserves every record, in-flight work is queued
again and runs, an existing swarm is never overwritten, bad documents are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from cfn_client.api import Client
from cfn_client.wire.errors import InvalidArgs
from cfn_daemon.core import snapshot as rules
from cfn_daemon.store.keys import Keys
from tests.cli_support import (
    Swarm,
    destroy,
    new_swarm_name,
    own_cfnd,
    run,
    shared_cfnd,
    started,
    swarm,
    wait_agents,
)
from tests.conftest import SHARED_REDIS
from tests.daemon_proc import CfndProcess
from tests.waiting import wait_until

__all__ = ["shared_cfnd", "swarm"]  # fixtures, imported for pytest

TRICKY = "echo 'a, \"b\"'; printf 'line1\\nline2 ü\\n'"


def export(s: Swarm, path: Path, *flags: str) -> dict[str, Any]:
    code, _, err = s.cli("snapshot", "export", str(path), "--swarm", s.name, *flags)
    assert code == 0, err
    doc: dict[str, Any] = json.loads(path.read_bytes())
    return doc


def stop_all(cfn: Client, name: str) -> None:
    """Stop every agent of the swarm and wait until none runs."""
    for a in cfn.agent_list(name).agents:
        cfn.agent_terminate(a.id, name, force=True)
    wait_until(
        lambda: all(a.status in ("stopped", "failed") for a in cfn.agent_list(name).agents),
        60,
        "every agent to stop",
    )


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("created_at", "config")}


def test_round_trip_export_destroy_import_export_preserves_everything(
    swarm: Swarm, tmp_path: Path
) -> None:
    with swarm.client(timeout_s=120) as cfn:
        ok = cfn.task_submit(TRICKY, swarm=swarm.name)
        bad = cfn.task_submit("exit 3", swarm=swarm.name, max_attempts=1)  # dead-lettered
        waited = cfn.task_wait([ok.id, bad.id], swarm=swarm.name, timeout_s=60)
        assert {t.status for t in waited.tasks} == {"succeeded", "failed"}
        code, out, err = swarm.cli("loop", "add a flag", "--implementers", "impl",
                                   "--validators", "check")  # fmt: skip
        assert code == 0, err
        run = out.split()[0]
        code, _, err = swarm.cli("loop", "follow", run)
        assert code == 0, err
        spec = tmp_path / "epic.toml"
        spec.write_text(
            'name = "snap epic"\n[[phases]]\nname = "one"\nimplementers = ["impl"]\n'
            'validators = ["check"]\n'
        )
        code, out, err = swarm.cli("--json", "epic", "start", str(spec))
        assert code == 0, err
        (epic,) = [e.id for e in cfn.epic_list(swarm.name).epics]
        assert cfn.epic_status(epic, swarm=swarm.name).status == "done"
        stop_all(cfn, swarm.name)
        assert [t.id for t in cfn.dlq_list(swarm.name).tasks] == [bad.id]

    first = export(swarm, tmp_path / "one.json")
    assert (first["format"], first["version"]) == ("cfn-snapshot", 1)
    assert [s["id"] for s in first["swarms"]] == [swarm.name]
    assert {t["id"] for t in first["tasks"]} >= {ok.id, bad.id}
    assert next(t for t in first["tasks"] if t["id"] == ok.id)["record"]["text"] == TRICKY
    assert next(t for t in first["tasks"] if t["id"] == bad.id)["dlq_error"] is not None
    assert run in [r["id"] for r in first["runs"]] and all(r["log"] for r in first["runs"])
    assert len(first["runs"]) == 2  # the loop run and the epic's phase
    assert [e["id"] for e in first["epics"]] == [epic]
    assert len(first["agents"]) >= 3  # a shell agent, the implementer, the validator

    destroy(swarm.socket, swarm.name)
    code, out, err = swarm.cli("--json", "snapshot", "import", str(tmp_path / "one.json"))
    assert code == 0, err
    result = json.loads(out)
    assert result["swarms"] == [swarm.name] and result["tasks"] == len(first["tasks"])
    assert result["requeued"] == [] and any("records only" in n for n in result["notes"])

    second = export(swarm, tmp_path / "two.json")
    assert comparable(second) == comparable(first)
    with swarm.client(timeout_s=60) as cfn:  # and cfnd reads the records back as it made them
        assert cfn.task_status(ok.id, swarm.name).result is not None
        assert cfn.task_field(ok.id, "output", swarm=swarm.name) == 'a, "b"\nline1\nline2 ü\n'
        assert [t.id for t in cfn.dlq_list(swarm.name).tasks] == [bad.id]
        assert cfn.loop_status(run, swarm.name).status == "done"
        assert cfn.epic_status(epic, swarm=swarm.name).status == "done"
        assert all(a.status in ("stopped", "failed") for a in cfn.agent_list(swarm.name).agents)

    # Never over an existing swarm; under a new id it is a copy.
    code, _, err = swarm.cli("snapshot", "import", str(tmp_path / "one.json"))
    assert code == 1 and f"swarm {swarm.name} already exists" in err and "--swarm" in err
    copy = new_swarm_name()
    code, out, err = swarm.cli("snapshot", "import", str(tmp_path / "one.json"), "--swarm", copy)
    try:
        assert code == 0, err
        assert f"imported swarm {copy}" in out
        with swarm.client(timeout_s=60) as cfn:
            assert cfn.task_status(ok.id, copy).swarm == copy
            assert cfn.loop_status(run, copy).swarm == copy
            assert cfn.epic_status(epic, swarm=copy).status == "done"
    finally:
        destroy(swarm.socket, copy)


def test_in_flight_work_is_queued_again_and_runs_after_import(swarm: Swarm, tmp_path: Path) -> None:
    with swarm.client(timeout_s=60) as cfn:
        cfn.agent_create("shell", swarm=swarm.name)
        wait_agents(cfn, swarm.name, 1)
    running, _ = started(swarm, "sleep 3; echo done")
    with swarm.client(timeout_s=60) as cfn:
        queued = cfn.task_submit("echo queued", swarm=swarm.name)  # the one agent is busy
        assert cfn.task_status(queued.id, swarm.name).status == "queued"
    doc = export(swarm, tmp_path / "busy.json")
    statuses = {t["id"]: t["record"]["status"] for t in doc["tasks"]}
    assert statuses[running] == "running" and statuses[queued.id] == "queued"
    destroy(swarm.socket, swarm.name)

    code, out, err = swarm.cli("--json", "snapshot", "import", str(tmp_path / "busy.json"))
    assert code == 0, err
    assert json.loads(out)["requeued"] == [running]
    with swarm.client(timeout_s=60) as cfn:
        assert {cfn.task_status(t, swarm.name).status for t in (running, queued.id)} == {"queued"}
        assert [a.status for a in cfn.agent_list(swarm.name).agents] == ["stopped"]
        cfn.agent_create("shell", swarm=swarm.name)  # the queue is live again
        final = cfn.task_wait([running, queued.id], swarm=swarm.name, timeout_s=60)
        assert {t.status for t in final.tasks} == {"succeeded"}, final


def test_import_refuses_documents_it_does_not_understand(
    swarm: Swarm, shared_cfnd: CfndProcess, tmp_path: Path
) -> None:
    def attempt(text: str) -> str:
        path = tmp_path / "doc.json"
        path.write_text(text)
        code, _, err = swarm.cli("snapshot", "import", str(path))
        assert code == 1, err
        return err

    assert "expected 'cfn-snapshot'" in attempt('{"format": "tarball", "version": 1}')
    assert "version 2 (written by a newer cfn)" in attempt(
        '{"format": "cfn-snapshot", "version": 2, "created_at": ""}'
    )
    assert "not a cfn snapshot" in attempt("this is not json")
    err = attempt(
        '{"format": "cfn-snapshot", "version": 1, "created_at": "", "swarms": '
        '[{"id": "zz", "state": {}}], "tasks": [{"swarm": "zz", "id": "t1", '
        '"created_ms": "soon", "record": {"status": "queued"}}]}'
    )
    assert "$.tasks[0].created_ms" in err and "int" in err
    err = attempt(
        '{"format": "cfn-snapshot", "version": 1, "created_at": "", "agents": '
        '[{"swarm": "gone", "id": "a1", "record": {}}]}'
    )
    assert "$.agents[0]" in err and "not in $.swarms" in err
    assert "unknown field" in attempt(
        '{"format": "cfn-snapshot", "version": 1, "created_at": "", "secrets": []}'
    )
    # Keys a former swarm of that id left behind (an interrupted destroy): refused too,
    # and nothing is written.
    doc = export(swarm, tmp_path / "ok.json")
    keys = Keys(shared_cfnd.env["CFN_KEY_PREFIX"])
    ghost = new_swarm_name()
    r = redis.Redis.from_url(SHARED_REDIS)
    try:
        r.xadd(keys.queue(ghost, "normal"), {"t": "t-old"})
        code, _, err = swarm.cli("snapshot", "import", str(tmp_path / "ok.json"), "--swarm", ghost)
        assert code == 1 and f"keys of a former swarm {ghost}" in err, err
        assert not r.exists(keys.swarm_state(ghost)) and not r.sismember(keys.swarms, ghost)
    finally:
        r.delete(keys.queue(ghost, "normal"))
        r.close()
    assert doc["swarms"][0]["id"] == swarm.name


def test_rules_unit() -> None:
    rec = {"swarm": "old", "id": "t1", "state": '{"swarm": "old", "x": [{"swarm": "old"}]}',
           "text": "old"}  # fmt: skip
    out = rules.rename_record(rec, "old", "new")
    assert out["swarm"] == "new" and out["text"] == "old" and out["id"] == "t1"
    assert json.loads(out["state"]) == {"swarm": "new", "x": [{"swarm": "new"}]}
    same = {"state": '{"swarm": "other"}'}
    assert rules.rename_record(same, "old", "new") == same
    assert rules.imported_task({"status": "running", "agent": "a"}) == (
        {"status": "queued", "agent": ""}, True,
    )  # fmt: skip
    assert rules.imported_task({"status": "failed"}) == ({"status": "failed"}, False)
    assert rules.imported_agent({"status": "busy"}, 5)["status"] == "stopped"
    assert rules.imported_agent({"status": "lost", "x": "1"}, 5) == {"status": "lost", "x": "1"}
    with pytest.raises(InvalidArgs, match="format"):
        rules.decode(b'{"format": "x"}')


def test_a_snapshot_larger_than_a_frame_moves_in_ranges(swarm: Swarm, tmp_path: Path) -> None:
    """A 3 MiB task text (the frame cap is 1 MiB) goes out in ranges and back in chunks."""
    big = ": " + "".join(f"{i:07d}é" for i in range(3 << 17))  # multi-byte chars at every cut
    with swarm.client(timeout_s=120) as cfn:
        task = cfn.task_submit(big, swarm=swarm.name, max_attempts=1)
        cfn.task_wait([task.id], swarm=swarm.name, timeout_s=60)
        frame = cfn.hello().max_frame_bytes
        stop_all(cfn, swarm.name)
    path = tmp_path / "big.json"
    first = export(swarm, path)
    assert path.stat().st_size > 3 * frame
    destroy(swarm.socket, swarm.name)
    code, _, err = swarm.cli("snapshot", "import", str(path))
    assert code == 0, err
    with swarm.client(timeout_s=120) as cfn:
        assert cfn.task_field(task.id, "text", swarm=swarm.name) == big
    assert comparable(export(swarm, tmp_path / "again.json")) == comparable(first)


def test_config_overrides_come_back_only_with_config(tmp_path: Path) -> None:
    with own_cfnd("cfnsnap-") as proc, Client(proc.socket, timeout_s=60) as cfn:
        cfn.swarm_init("mesh", 4, name="conf")
        cfn.config_set("loop.consensus_threshold", "0.85")
        path = tmp_path / "conf.json"
        assert run(proc.socket, "snapshot", "export", str(path))[0] == 0
        assert json.loads(path.read_bytes())["config"] == {"loop.consensus_threshold": "0.85"}
        cfn.config_reset("loop.consensus_threshold")
        code, out, err = run(proc.socket, "snapshot", "import", str(path), "--swarm", "c2")
        assert code == 0, err
        assert "1 config overrides in the snapshot were not applied" in out
        assert cfn.config_show("loop.consensus_threshold").entries[0].source != "runtime"
        code, out, err = run(
            proc.socket, "--json", "snapshot", "import", str(path), "--swarm", "c3", "--config"
        )
        assert code == 0, err
        assert json.loads(out)["config"] == ["loop.consensus_threshold"]
        (entry,) = cfn.config_show("loop.consensus_threshold").entries
        assert (entry.value, entry.source) == (0.85, "runtime")
        for name in ("conf", "c2", "c3"):
            cfn.swarm_destroy(name, force=True)
