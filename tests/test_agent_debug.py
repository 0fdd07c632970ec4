"""``cfnctl debug AGENT`` against a real cfnd and real cfn-agent processes: pending
work, events, the log tail, restart history after a kill, and unknown agents."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from cfn_client.wire.schema.swarm import Event
from cfn_daemon.core import agent_history
from cfn_daemon.util.tail import read_tail
from tests.cli_support import Swarm, follow, started, swarm, wait_agents
from tests.waiting import wait_until

__all__ = ["swarm"]  # fixture, imported for pytest


def test_debug_shows_pending_work_events_log_and_restart_history(swarm: Swarm) -> None:
    with swarm.client(timeout_s=60) as cfn:
        cfn.agent_create("shell", swarm=swarm.name)
        (agent,) = wait_agents(cfn, swarm.name, 1)
    task_id, ran_on = started(swarm, "sleep 60")
    assert ran_on == agent.id

    code, out, err = swarm.cli("--json", "debug", agent.id)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["agent"]["id"] == agent.id and doc["agent"]["status"] == "busy"
    assert doc["agent"]["heartbeat_age_ms"] is not None
    assert doc["agent"]["heartbeat_age_ms"] < 20_000
    assert doc["work_total"] == 1
    (work,) = doc["work"]
    assert work["task"] == task_id and work["delivered"] and work["deliveries"] >= 1
    types = [e["type"] for e in doc["events"]]
    assert "agent.spawned" in types and "task.started" in types
    assert all(agent_history.mentions(Event(**e), agent.id) for e in doc["events"])
    assert doc["log_path"].endswith(f"agents/{agent.id}.log")
    assert doc["log_bytes"] > 0 and doc["log_tail"]
    assert len(doc["log_tail"].encode()) <= 4096
    assert doc["record"] == {}  # only with --verbose
    assert doc["restart"]["exits"] == [] and doc["restart"]["replaced_by"] is None

    code, out, err = swarm.cli("--json", "debug", agent.id, "--verbose", "--events", "2")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["record"]["id"] == agent.id and doc["record"]["status"] == "busy"
    assert len(doc["events"]) == 2

    code, out, err = swarm.cli("debug", agent.id)  # people's view
    assert code == 0, err
    assert task_id in out and "pending work" in out and f"{agent.id}.log" in out

    # A crash: the old agent's view shows the exit and its replacement; the new one's,
    # whom it replaced.
    assert agent.pid is not None
    with follow(swarm.socket, swarm.name, ["agent.replaced"]) as events:
        os.killpg(agent.pid, signal.SIGKILL)
        replaced = next(e for e in events if e.data.get("agent") == agent.id)
    new_id = str(replaced.data["replacement"])
    code, out, err = swarm.cli("--json", "debug", agent.id)
    assert code == 0, err
    doc = json.loads(out)
    (exit_,) = doc["restart"]["exits"]
    assert exit_["status"] == "failed" and "exited with -9" in exit_["reason"]
    assert exit_["exit_code"] == -9  # SIGKILL
    assert task_id in exit_["requeued"]
    assert doc["restart"]["replaced_by"] == new_id
    assert doc["restart"]["starts_last_minute"] >= 1
    assert doc["work_total"] == 0  # its work went back to the queue
    doc = wait_until(
        lambda: (
            (d := json.loads(swarm.cli("--json", "debug", new_id)[1]))
            and d["agent"]["status"] != "starting"
            and d
        ),
        60,
        "the replacement to register",
    )
    assert doc["restart"]["replaces"] == agent.id
    with swarm.client(timeout_s=60) as cfn:
        cfn.task_cancel(task_id, swarm=swarm.name)


def test_debug_of_an_unknown_agent_names_it(swarm: Swarm) -> None:
    code, out, err = swarm.cli("debug", "no-such-agent")
    assert code == 1
    assert "no-such-agent" in err and "agent list" in err
    code, out, _ = swarm.cli("--json", "debug", "no-such-agent")
    assert code == 1 and json.loads(out)["error"]["code"] == "not_found"


def test_mentions_and_exits_unit() -> None:
    ev = [
        Event(id="1-0", ts_ms=1, swarm="s", type="agent.spawned", data={"agent": "a"}),
        Event(id="2-0", ts_ms=2, swarm="s", type="task.assigned", data={"agents": ["b", "a"]}),
        Event(id="3-0", ts_ms=3, swarm="s", type="task.started", data={"agent": "b"}),
        Event(id="4-0", ts_ms=4, swarm="s", type="agent.failed",
              data={"agent": "a", "reason": "process exited with 1", "requeued": ["t1"]}),
        Event(id="5-0", ts_ms=5, swarm="s", type="agent.replaced",
              data={"agent": "a", "replacement": "c", "slot": "a"}),
    ]  # fmt: skip
    assert [e.id for e in ev if agent_history.mentions(e, "a")] == ["1-0", "2-0", "4-0", "5-0"]
    (x,) = agent_history.exits(ev, "a")
    assert (x.status, x.reason, x.requeued) == ("failed", "process exited with 1", ["t1"])
    assert x.exit_code == 1
    assert agent_history.replacement_of(ev, "a") == (None, "c")
    assert agent_history.replacement_of(ev, "c") == ("a", None)


def test_read_tail_reads_only_the_end_from_a_line_start(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"".join(b"line %06d\n" % i for i in range(100_000)))  # 1.2 MB
    tail = read_tail(path, 4096)
    assert tail is not None and tail.truncated and tail.size == path.stat().st_size
    assert len(tail.text) <= 4096 and tail.text.endswith("line 099999\n")
    assert tail.text.startswith("line ")  # a whole first line
    whole = read_tail(path.with_name("short.log"), 4096)
    assert whole is None  # missing file
    (tmp_path / "short.log").write_text("one\ntwo\n")
    short = read_tail(tmp_path / "short.log", 4096)
    assert short is not None and (short.text, short.truncated) == ("one\ntwo\n", False)
