"""``cfnctl run``, ``task``, ``dlq`` and ``events`` (and the clients' task methods)
against a real cfnd whose ``shell`` agents run the task text.

Each test makes its own swarm on the session's shared cfnd (tests/cli_support.py);
cfnd spawns an agent on demand when a task arrives in a swarm without one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from cfn_client.api import AsyncClient, Client
from cfn_client.cli import env as commands_pkg
from cfn_client.cli import render
from cfn_client.wire.errors import InvalidArgs, NotFound, RequestTimeout
from cfn_client.wire.schema.swarm import Event, SwarmStatusResult
from tests.cli_support import (
    Swarm,
    destroy,
    field,
    follow,
    header,
    new_swarm_name,
    started,
    swarm,
    wait_agents,
)
from tests.daemon_proc import CFNCTL, CfndProcess

__all__ = ["swarm"]  # fixture, imported for pytest


@pytest.fixture(scope="module")
def workers(shared_cfnd: CfndProcess) -> Iterator[Swarm]:
    """One swarm with two idle shell agents for the tests that only look at their own
    tasks (by id): no agent start-up per test."""
    name = new_swarm_name()
    with Client(shared_cfnd.socket, timeout_s=60) as cfn:
        cfn.swarm_init("mesh", 4, name=name)
        cfn.agent_create("shell", swarm=name, count=2)
        wait_agents(cfn, name, 2)
    try:
        yield Swarm(shared_cfnd.socket, name)
    finally:
        destroy(shared_cfnd.socket, name)


FAILS = "echo partial; for i in $(seq 30); do echo line $i >&2; done; echo boom >&2; exit 2"


# --------------------------------------------------------------------------- run


def test_run_prints_only_the_id_and_submits_every_option(workers: Swarm) -> None:
    swarm = workers
    code, out, err = swarm.cli("run", "echo hi")
    assert (code, err) == (0, "")
    (tid,) = out.split()
    assert out == f"{tid}\n"
    code, out, _ = swarm.cli(
        "--json", "run", "echo opts", "--type", "shell", "--priority", "high",
        "--max-attempts", "5", "--task-timeout", "2m",
    )  # fmt: skip
    doc = json.loads(out)
    assert code == 0
    assert (doc["text"], doc["type"], doc["priority"]) == ("echo opts", "shell", "high")
    assert (doc["max_attempts"], doc["timeout_s"], doc["swarm"]) == (5, 120.0, swarm.name)
    with swarm.client(timeout_s=60) as cfn:
        done = cfn.task_wait([tid, doc["id"]], swarm=swarm.name, timeout_s=60).tasks
    assert [t.status for t in done] == ["succeeded", "succeeded"]
    code, _, err = swarm.cli("run", "x", "--type", "wizard")
    assert (code, "unknown agent type 'wizard'" in err) == (1, True)


def test_run_wait_success_prints_output_and_exits_0(workers: Swarm) -> None:
    swarm = workers
    code, out, err = swarm.cli("run", "echo hello world", "--wait")
    assert (code, out, err) == (0, "hello world\n", "")
    code, out, _ = swarm.cli("--json", "run", "echo x", "--wait", "--timeout", "30")
    doc = json.loads(out)
    assert (code, doc["status"], doc["result"]["output"]) == (0, "succeeded", "x\n")
    assert (doc["result"]["ok"], doc["result"]["exit_code"], doc["attempts"]) == (True, 0, 1)


def test_run_wait_failure_exits_1_with_stderr_tail(workers: Swarm) -> None:
    swarm = workers
    code, out, err = swarm.cli("run", FAILS, "--wait", "--max-attempts", "1")
    assert code == 1
    assert out == "partial\n"  # what it printed before failing
    lines = err.splitlines()
    assert lines[0].startswith("task t") and lines[0].endswith(
        " failed (exit code 2): exit status 2"
    )
    assert lines[-1] == "boom"
    assert len(lines) == 1 + render.STDERR_TAIL_LINES
    code, out, err = swarm.cli("--json", "run", "exit 4", "--wait", "--max-attempts", "1")
    doc = json.loads(out)
    assert (code, doc["status"], doc["result"]["exit_code"], err) == (1, "failed", 4, "")


def test_run_wait_timeout_exits_1_and_the_task_keeps_running(workers: Swarm) -> None:
    swarm = workers
    # cfnd answers a wait that runs out with a `timeout` error naming what is unfinished.
    with follow(swarm.socket, swarm.name, ["task.started"]) as events:
        code, out, err = swarm.cli("run", "sleep 30", "--wait", "--timeout", "0.5")
        assert (code, out) == (1, "")
        assert err.startswith("cfnctl: error[timeout]: 1 task(s) still unfinished after 0.5 s: t")
        tid = err.strip().rsplit(" ", 1)[1]
        # It was not cancelled: an agent runs it.
        assert any(e.data["task"] == tid for e in events)
    code, out, _ = swarm.cli("--json", "task", "wait", tid, "--timeout", "0.2")
    doc = json.loads(out)
    assert (code, doc["ok"], doc["error"]["code"]) == (1, False, "timeout")
    assert doc["error"]["details"] == {"pending": [tid], "pending_count": 1}
    code, out, _ = swarm.cli("task", "cancel", tid)
    assert (code, out.strip()) == (0, f"task {tid} cancelled; now cancelled")


# --------------------------------------------------------------------------- tasks


def test_task_list_status_cancel_retry(swarm: Swarm) -> None:
    _, ok, _ = swarm.cli("--json", "run", "echo a", "--wait")
    _, bad, _ = swarm.cli("--json", "run", FAILS, "--wait", "--max-attempts", "1")
    ok_id, bad_id = json.loads(ok)["id"], json.loads(bad)["id"]
    code, out, _ = swarm.cli("task", "list")
    assert header(out) == [
        "ID", "STATUS", "PRIORITY", "TYPE", "AGENT", "ATTEMPTS", "AGE", "TEXT",
    ]  # fmt: skip
    rows = sorted(line.split()[:2] for line in out.splitlines()[1:])
    assert rows == sorted([[ok_id, "succeeded"], [bad_id, "failed"]])
    code, out, _ = swarm.cli("task", "list", "--status", "failed", "--limit", "5")
    assert [line.split()[0] for line in out.splitlines()[1:]] == [bad_id]
    code, out, _ = swarm.cli("--json", "task", "list", "--limit", "1")
    assert len(json.loads(out)["tasks"]) == 1

    code, out, _ = swarm.cli("task", "status", bad_id)
    assert code == 0
    shown = {k: field(out, k) for k in ("status", "result", "exit code", "attempts")}
    assert shown == {"status": "failed", "result": "FAILED", "exit code": "2", "attempts": "1/1"}
    assert field(out, "duration").endswith(("ms", "s"))
    assert "output:\n  partial" in out
    assert "stderr:\n  line 1" in out
    code, out, _ = swarm.cli("--json", "task", "status", ok_id)
    assert json.loads(out)["result"]["exit_code"] == 0

    code, out, _ = swarm.cli("task", "retry", bad_id)
    assert (code, out.strip()) == (0, f"task {bad_id} queued again; now queued")
    code, _, err = swarm.cli("task", "retry", ok_id)
    assert code == 1
    assert "error[" in err and ok_id in err  # a succeeded task is not run again
    code, _, err = swarm.cli("task", "cancel", "t99")
    assert (code, "error[not_found]: no task 't99'" in err) == (1, True)
    code, _, err = swarm.cli("task", "status", "t99")
    assert (code, "error[not_found]" in err) == (1, True)


def test_task_wait_exit_codes_and_table(swarm: Swarm, tmp_path: Path) -> None:
    ids = [json.loads(swarm.cli("--json", "run", t)[1])["id"] for t in ("echo one", "echo two")]
    bad = json.loads(swarm.cli("--json", "run", "exit 2", "--max-attempts", "1")[1])["id"]
    code, out, err = swarm.cli("task", "wait", *ids)
    assert (code, err) == (0, "")
    assert header(out) == ["ID", "STATUS", "EXIT", "AGENT", "DURATION", "ERROR"]
    rows = [line.split() for line in out.splitlines()[1:-1] if line.strip()]
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert out.splitlines()[-1] == "2 of 2 succeeded"
    code, out, err = swarm.cli("task", "wait", ids[0], bad)
    assert code == 1
    (row,) = [line.split() for line in out.splitlines() if line.startswith(bad)]
    assert row[1:3] == ["failed", "2"]
    assert row[-3:] == ["exit", "status", "2"]
    assert out.splitlines()[-1] == "1 of 2 succeeded"
    # --all: until the swarm has nothing unfinished (like pueue wait), reporting what
    # finished meanwhile; the three above had finished before, so there is nothing.
    code, out, err = swarm.cli("task", "wait", "--all", "--timeout", "1m")
    assert (code, out, err) == (0, "no tasks to wait for\n", "")
    gate = tmp_path / "go"
    late = [
        json.loads(swarm.cli("--json", "run", t, "--max-attempts", "1")[1])["id"]
        for t in (f"until [ -e {gate} ]; do sleep 0.05; done; {end}" for end in ("true", "exit 3"))
    ]
    code, out, _ = swarm.cli("--json", "task", "wait", "--all", "--timeout", "0.3")
    details = json.loads(out)["error"]["details"]
    assert (code, sorted(details["pending"]), details["pending_count"]) == (1, sorted(late), 2)
    opener = threading.Timer(1.0, gate.touch)  # once the wait below is under way
    opener.start()
    try:
        code, out, _ = swarm.cli("task", "wait", "--all", "--timeout", "1m")
    finally:
        opener.join()
    assert code == 1
    (row,) = [line.split() for line in out.splitlines()[1:-1] if line.strip()]
    assert row[:3] == [late[1], "failed", "3"]  # only what did not succeed is listed
    assert out.splitlines()[-1] == "1 of 2 succeeded (1 failed, 1 succeeded; 1 not listed)"
    code, out, _ = swarm.cli("--json", "task", "wait", ids[0])
    assert (code, [t["status"] for t in json.loads(out)["tasks"]]) == (0, ["succeeded"])
    code, _, err = swarm.cli("task", "wait", "nope")
    assert (code, "error[not_found]: no task 'nope'" in err) == (1, True)


def test_task_clean(swarm: Swarm) -> None:
    assert swarm.cli("run", "echo a", "--wait")[0] == 0
    code, out, _ = swarm.cli("task", "clean", "--older-than", "1h")
    assert (code, out.strip()) == (0, "removed 0 finished task(s)")  # it finished just now
    code, out, _ = swarm.cli("task", "clean")
    assert (code, out.strip()) == (0, "removed 1 finished task(s)")
    code, out, _ = swarm.cli("--json", "task", "clean")
    assert json.loads(out) == {"count": 0}
    code, out, _ = swarm.cli("task", "list")
    assert (code, out.strip()) == (0, "no tasks")


def test_dlq_list_and_requeue(
    swarm: Swarm, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, out, _ = swarm.cli("dlq", "list")
    assert (code, out) == (0, "no dead tasks\n")
    # Each fails its one attempt, and succeeds once requeued.
    dead = [
        json.loads(swarm.cli("--json", "run", t, "--wait", "--max-attempts", "1")[1])["id"]
        for t in (f"[ -e {tmp_path}/{n} ] || {{ touch {tmp_path}/{n}; exit {n}; }}" for n in (3, 4))
    ]
    code, out, _ = swarm.cli("dlq", "list")
    assert header(out)[-1] == "ERROR"
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == set(dead)
    assert rows[dead[0]].split()[1] == "failed"
    assert rows[dead[0]].endswith("exit status 3")
    code, out, _ = swarm.cli("dlq", "requeue", dead[0])
    assert (code, out.strip()) == (0, "requeued 1 task(s)")
    # Everything: refused without --yes when nobody can be asked.
    for args in (["dlq", "requeue"], ["--json", "dlq", "requeue"]):
        code, out, err = swarm.cli(*args, input="y\n")
        assert code == 2
        assert "needs --yes" in out + err
    monkeypatch.setattr(commands_pkg, "interactive", lambda: True)
    code, _, err = swarm.cli("dlq", "requeue", input="n\n")
    assert code == 1
    assert "Requeue every dead task?" in err
    code, out, _ = swarm.cli("dlq", "requeue", input="y\n")
    assert (code, out.strip().splitlines()[-1]) == (0, "requeued 1 task(s)")
    code, out, _ = swarm.cli("--json", "dlq", "requeue", "--yes")
    assert json.loads(out) == {"count": 0}
    # Requeued tasks run again; these succeed and leave the DLQ for good.
    with swarm.client(timeout_s=60) as cfn:
        again = cfn.task_wait(dead, swarm=swarm.name, timeout_s=60).tasks
        assert [t.status for t in again] == ["succeeded", "succeeded"]
        assert cfn.dlq_list(swarm.name).tasks == []


# --------------------------------------------------------------------------- events


def test_events_list_filters_and_renders(swarm: Swarm) -> None:
    assert swarm.cli("run", "exit 3", "--wait", "--max-attempts", "1")[0] == 1
    code, out, _ = swarm.cli("events")
    assert code == 0
    assert header(out) == ["TIME", "TYPE", "DATA"]
    lines = out.splitlines()
    assert "swarm.created" in lines[1]
    assert f"swarm={swarm.name} topology=mesh" in lines[1]
    (failed,) = [line for line in lines if "task.failed" in line]
    assert "error=exit status 3" in failed
    code, out, _ = swarm.cli("--json", "events", "--type", "task.failed", "--limit", "5")
    assert [e["type"] for e in json.loads(out)["events"]] == ["task.failed"]
    code, out, _ = swarm.cli("--json", "events", "--type", "task", "--limit", "2")
    doc = json.loads(out)["events"]
    assert len(doc) == 2 and all(e["type"].startswith("task.") for e in doc)
    assert doc[-1]["type"] == "task.failed"  # the newest ones, oldest first
    code, out, _ = swarm.cli("--json", "events", "--since", "10m")
    assert json.loads(out)["events"][0]["type"] == "swarm.created"
    code, out, _ = swarm.cli("--json", "events", "--since", str(int(time.time() * 1000) + 60_000))
    assert json.loads(out) == {"events": []}
    code, _, err = swarm.cli("events", "--since", "yesterday-ish")
    assert code == 2
    assert "is neither a duration ago" in err


def test_events_follow_json_lines(swarm: Swarm) -> None:
    # With --since a follow replays what matches, then goes on live; Ctrl-C stops it.
    assert swarm.cli("run", "echo one", "--wait")[0] == 0
    with subprocess.Popen(
        [*CFNCTL, "--socket", str(swarm.socket), "--swarm", swarm.name, "--json", "--timeout",
         "0.5", "events", "--follow", "--since", "1h", "--type", "task.succeeded"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            first = json.loads(proc.stdout.readline())
            assert (first["type"], first["swarm"]) == ("task.succeeded", swarm.name)
            # Idle past --timeout: a follow has no per-frame timeout. Then a live event.
            _, out, _ = swarm.cli("--json", "run", "sleep 1; echo two", "--wait")
            second = json.loads(proc.stdout.readline())
            assert (second["type"], second["data"]["task"]) == (
                "task.succeeded",
                json.loads(out)["id"],
            )
            assert proc.poll() is None
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
        finally:
            proc.kill()
            proc.wait()
    assert (proc.returncode, err) == (0, "")


def test_events_follow_human_lines_until_the_swarm_is_destroyed(swarm: Swarm) -> None:
    with subprocess.Popen(
        [*CFNCTL, "--socket", str(swarm.socket), "--swarm", swarm.name, "events", "-f",
         "--since", "1h", "--type", "swarm.created", "--type", "task.queued"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            assert "swarm.created" in proc.stdout.readline()
            tid = swarm.cli("run", "echo x")[1].strip()
            line = proc.stdout.readline()
            assert "task.queued" in line
            assert f"task={tid}" in line
            destroy(swarm.socket, swarm.name)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out) == (0, "")
    assert "cfnd ended the event stream" in err


def test_events_follow_ctrl_c_exits_0(swarm: Swarm, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(event: Event) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(render, "event_line", interrupted)
    code, out, err = swarm.cli("events", "--follow", "--since", "1h")  # replays swarm.created
    assert (code, out, err) == (0, "", "")


# --------------------------------------------------------------------------- API


def test_client_task_wait_outlasts_the_reply_timeout(workers: Swarm) -> None:
    swarm = workers
    with swarm.client(timeout_s=0.2) as cfn:
        task = cfn.task_submit("sleep 1; echo slow", swarm=swarm.name)
        done = cfn.task_wait([task.id], timeout_s=30, swarm=swarm.name)  # reply in ~1 s > 0.2 s
        assert [t.status for t in done.tasks] == ["succeeded"]
        done = cfn.task_wait([task.id], swarm=swarm.name)  # no limit at all
        assert done.tasks[0].result is not None
        assert done.tasks[0].result.output == "slow\n"
        hang = cfn.task_submit("sleep 30", swarm=swarm.name)
        with pytest.raises(RequestTimeout, match="still unfinished") as info:
            cfn.task_wait([hang.id], timeout_s=0.3, swarm=swarm.name)
        assert info.value.details == {"pending": [hang.id], "pending_count": 1}
        assert cfn.task_cancel(hang.id, swarm.name).status == "cancelled"


def test_client_methods_return_typed_results(swarm: Swarm) -> None:
    with swarm.client(timeout_s=60) as cfn:
        assert [s.topology for s in cfn.swarm_list().swarms if s.id == swarm.name] == ["mesh"]
        assert isinstance(cfn.swarm_status(swarm.name, verbose=True), SwarmStatusResult)
        assert cfn.task_list(swarm.name, limit=1).tasks == []
        assert cfn.dlq_requeue(swarm=swarm.name).count == 0
        got = cfn.events_list(swarm.name, types=["swarm.created"]).events
        assert [type(e) for e in got] == [Event]
        assert got[0].data["topology"] == "mesh"
        with pytest.raises(InvalidArgs, match="priority"):
            cfn.task_submit("x", swarm=swarm.name, priority="urgent")  # type: ignore[arg-type]
        with pytest.raises(NotFound, match="no task"):
            cfn.task_status("nope", swarm.name)


async def test_async_client_methods_and_follow(swarm: Swarm) -> None:
    async with AsyncClient(swarm.socket, timeout_s=0.5) as cfn:
        created = await cfn.agent_create(
            "shell", swarm=swarm.name, role="coordinator", capabilities=["x"]
        )
        assert created.agents[0].capabilities == ["x"]
        task = await cfn.task_submit("sleep 1; echo async", swarm=swarm.name, priority="high")
        done = await cfn.task_wait([task.id], timeout_s=30, swarm=swarm.name)
        assert done.tasks[0].status == "succeeded"
        assert done.tasks[0].agent == created.agents[0].id
        with anyio.fail_after(30):
            async with cfn.events_follow(swarm.name, since_ms=0) as events:
                async for event in events:
                    assert isinstance(event, Event)
                    assert event.type == "swarm.created"
                    break
        # The follow had its own connection: the shared one is untouched.
        assert (await cfn.task_status(task.id, swarm.name)).result is not None
        started_task, agent = await anyio.to_thread.run_sync(started, swarm, "sleep 30")
        assert agent == created.agents[0].id
        assert (await cfn.task_cancel(started_task, swarm.name)).status == "cancelled"
