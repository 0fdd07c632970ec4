"""``cfnctl swarm`` and ``cfnctl agent`` as a user types them, against a real cfnd.

Each test makes its own swarm on the session's shared cfnd (tests/cli_support.py);
the agents are real ``cfn-agent`` processes of the built-in ``shell`` type. Tests
that need a daemon with no other swarm (the "current swarm" rules) start their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cfn_client.api import Client
from tests.cli_support import (
    Swarm,
    destroy,
    field,
    follow,
    header,
    new_swarm_name,
    run,
    started,
    swarm,
    wait_agents,
)
from tests.conftest import SHARED_REDIS
from tests.daemon_proc import CfndProcess

__all__ = ["swarm"]  # fixture, imported for pytest


@pytest.fixture
def crew(swarm: Swarm) -> tuple[Swarm, list[str]]:
    """The test's swarm with two idle shell agents (their ids, in list order)."""
    code, _, err = swarm.cli("agent", "create", "shell", "--count", "2")
    assert code == 0, err
    with swarm.client(timeout_s=60) as cfn:
        wait_agents(cfn, swarm.name, 2)
        ids = [a.id for a in cfn.agent_list(swarm.name).agents]
    return swarm, ids


# --------------------------------------------------------------------------- swarms


def test_swarm_init_renders_and_replaces_only_with_force(shared_cfnd: CfndProcess) -> None:
    sock, name = shared_cfnd.socket, new_swarm_name()
    try:
        code, out, err = run(sock, "swarm", "init", "mesh", "8", "--name", name)
        assert (code, out.strip()) == (0, f"swarm {name} created: mesh, balanced, up to 8 agents")
        code, _, err = run(sock, "swarm", "init", "star", "4", "--name", name)
        assert code == 1
        hint = f"swarm {name} exists; use `cfnctl swarm use {name}`, or --force to replace it"
        assert f"error[conflict]: {hint}" in err
        code, out, _ = run(
            sock, "--json", "swarm", "init", "star", "50", "--strategy", "reliability",
            "--name", name, "--force",
        )  # fmt: skip
        doc = json.loads(out)
        assert code == 0
        assert (doc["id"], doc["name"], doc["topology"]) == (name, name, "star")
        assert (doc["strategy"], doc["max_agents"], doc["agents"]) == ("reliability", 50, 0)
        with Client(sock) as cfn:
            (info,) = [s for s in cfn.swarm_list().swarms if s.id == name]
        assert (info.topology, info.strategy, info.max_agents) == ("star", "reliability", 50)
    finally:
        destroy(sock, name)


def test_swarm_list_and_status(crew: tuple[Swarm, list[str]]) -> None:
    swarm, (a1, a2) = crew
    code, out, _ = run(swarm.socket, "swarm", "list")
    assert code == 0
    assert header(out) == ["ID", "NAME", "TOPOLOGY", "STRATEGY", "AGENTS", "STATUS", "AGE"]
    rows = [line.lstrip("* ").split() for line in out.splitlines()[1:]]  # * marks the current
    (row,) = [r for r in rows if r[0] == swarm.name]
    assert row[:6] == [swarm.name, swarm.name, "mesh", "balanced", "2/8", "active"]
    code, out, _ = swarm.cli("run", "echo hi", "--wait")
    assert (code, out) == (0, "hi\n")
    code, out, _ = swarm.cli("swarm", "status")
    assert code == 0
    assert (field(out, "swarm"), field(out, "status")) == (swarm.name, "active")
    assert field(out, "topology") == "mesh, balanced"
    assert field(out, "agents") == "2 of at most 8"
    assert (field(out, "queued"), field(out, "tasks")) == ("none", "succeeded 1")
    agents = out.split("\n\n")[1].splitlines()
    assert agents[0].split() == [
        "ID", "TYPE", "ROLE", "STATUS", "TASK", "HEARTBEAT", "DONE/FAILED",
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in agents[1:]}
    assert set(rows) == {a1, a2}
    assert [r[1:5] for r in rows.values()] == [["shell", "implementer", "idle", "-"]] * 2
    assert sorted(r[6] for r in rows.values()) == ["0/0", "1/0"]
    code, out, _ = swarm.cli("swarm", "status", "--verbose")
    assert header(out.split("\n\n")[1])[-4:] == ["HOST", "PID", "RESTARTS", "CAPABILITIES"]
    code, out, _ = swarm.cli("--json", "swarm", "status")
    doc = json.loads(out)
    assert (doc["swarm"]["id"], len(doc["agents"]), doc["tasks"]) == (
        swarm.name, 2, {"succeeded": 1},
    )  # fmt: skip
    # A positional ID wins over --swarm.
    code, out, err = run(swarm.socket, "--swarm", "zz", "swarm", "status", swarm.name, "-v")
    assert (code, field(out, "swarm")) == (0, swarm.name), err
    code, _, err = run(swarm.socket, "swarm", "status", "no-such-swarm")
    assert (code, "error[not_found]: no swarm 'no-such-swarm'" in err) == (1, True)


def test_swarm_scale_up_and_down(crew: tuple[Swarm, list[str]]) -> None:
    swarm, _ = crew
    code, out, _ = swarm.cli("swarm", "scale", "3")
    assert code == 0
    assert out.startswith(f"swarm {swarm.name}: spawned 1 (shell-")
    with swarm.client(timeout_s=60) as cfn:
        wait_agents(cfn, swarm.name, 3)
    busy_task, busy = started(swarm, "sleep 30")
    code, out, _ = swarm.cli("swarm", "scale", "3")
    assert out.strip() == f"swarm {swarm.name}: already at that size"
    # Down: the idle ones go; a busy one only with --force, its task back to the queue.
    code, out, _ = swarm.cli("swarm", "scale", "1")
    assert code == 0, out
    assert out.startswith(f"swarm {swarm.name}: stopping 2 (")
    assert busy not in out
    code, _, err = swarm.cli("swarm", "scale", "0")
    assert code == 1
    assert f"error[conflict]: scaling to 0 would stop busy agents ({busy})" in err
    with follow(swarm.socket, swarm.name, ["task.requeued"]) as events:
        code, out, _ = swarm.cli("--json", "swarm", "scale", "0", "--force")
        doc = json.loads(out)
        assert (code, doc["swarm"], doc["spawned"]) == (0, swarm.name, [])
        assert busy in doc["stopping"]  # with the two still on their way out
        # Its task is handed back to the queue, not lost.
        assert any(e.data["task"] == busy_task for e in events)
    # Above the cap raises it (tests/test_cli_spellings.py); above 50 is a usage error.
    code, _, err = swarm.cli("swarm", "scale", "51")
    assert (code, "51 is not in the range 0<=x<=50" in err) == (2, True)


def test_swarm_destroy_drains_busy_agents_and_reset_needs_force(
    crew: tuple[Swarm, list[str]],
) -> None:
    swarm, (a1, a2) = crew
    code, _, err = swarm.cli("swarm", "reset")
    assert code == 2
    assert "confirm with --force" in err
    code, out, _ = swarm.cli("swarm", "reset", "--force")
    assert code == 0
    assert out.startswith(f"swarm {swarm.name} reset; stopped 2 agent(s): ")
    assert {a1, a2} == set(out.strip().split(": ", 1)[1].split(", "))
    code, out, _ = swarm.cli("agent", "list")
    assert (code, out.strip()) == (0, "no agents")
    # Busy agents do not block a destroy: cfnd drains them (no --force needed).
    started(swarm, "sleep 0.5; echo drained")
    code, out, err = swarm.cli("swarm", "destroy")
    assert code == 0, err
    assert out.startswith(f"swarm {swarm.name} destroyed; stopped 1 agent(s): shell-")
    code, _, err = swarm.cli("swarm", "status")
    assert (code, f"error[not_found]: no swarm '{swarm.name}'" in err) == (1, True)
    code, out, _ = run(swarm.socket, "--json", "swarm", "list")
    assert swarm.name not in [s["id"] for s in json.loads(out)["swarms"]]


def test_swarm_broadcast_and_agent_send_print_paths(crew: tuple[Swarm, list[str]]) -> None:
    swarm, (a1, a2) = crew
    code, out, _ = swarm.cli("swarm", "broadcast", "hello all")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("message m") and lines[0].endswith("delivered to 2 agent(s):")
    code, out, _ = swarm.cli("--json", "swarm", "broadcast", "hello again")
    paths = [d["path"] for d in json.loads(out)["deliveries"]]
    assert sorted(p[-1] for p in paths) == sorted([a1, a2])
    assert len({p[0] for p in paths}) == 1  # one entry agent passes it on
    assert lines[1:] == [" -> ".join(p) for p in paths]
    code, out, _ = swarm.cli("--json", "swarm", "broadcast", "hi", "--from", a1)
    assert json.loads(out)["deliveries"] == [{"to": a2, "path": [a1, a2]}]
    with swarm.client() as cfn:
        sent = cfn.events_list(swarm.name, types=["message.broadcast"]).events
    assert [e.data["from"] for e in sent] == ["cfnd", "cfnd", a1]
    code, out, _ = swarm.cli("agent", "send", a1, a2, "ping?")
    assert (code, out) == (0, f"{a1} -> {a2}\n")
    with swarm.client() as cfn:
        (sent,) = cfn.events_list(swarm.name, types=["message.sent"]).events
    assert (sent.data["from"], sent.data["deliveries"]) == (a1, [{"to": a2, "path": [a1, a2]}])
    code, _, err = swarm.cli("agent", "send", a1, "ghost", "hi")
    assert code == 1
    assert "error[invalid_args]: agent ghost is not a live member of this swarm" in err


# --------------------------------------------------------------------------- agents


def test_agent_create_with_every_option(swarm: Swarm) -> None:
    code, out, err = swarm.cli(
        "agent", "create", "shell", "echo first job", "--role", "coordinator",
        "--capability", "python", "--capability", "git", "--count", "2",
    )  # fmt: skip
    assert code == 0, err
    assert header(out)[:4] == ["ID", "TYPE", "ROLE", "STATUS"]
    rows = [line.split()[:3] for line in out.splitlines()[1:]]
    assert [r[1:] for r in rows] == [["shell", "coordinator"]] * 2
    with swarm.client(timeout_s=60) as cfn:
        agents = cfn.agent_list(swarm.name).agents
        assert sorted(a.id for a in agents) == sorted(r[0] for r in rows)
        assert [a.capabilities for a in agents] == [["python", "git"]] * 2
        # TASK is queued on the swarm at once, for the new agents to take.
        (task,) = cfn.task_list(swarm.name).tasks
        assert task.text == "echo first job"
        (done,) = cfn.task_wait([task.id], swarm=swarm.name, timeout_s=60).tasks
    assert (done.status, done.result and done.result.output) == ("succeeded", "first job\n")
    code, _, err = swarm.cli("agent", "create", "wizard")
    assert (code, "unknown agent type 'wizard'" in err) == (1, True)


def test_agent_list_status_and_changes(crew: tuple[Swarm, list[str]]) -> None:
    swarm, (a1, a2) = crew
    code, out, _ = swarm.cli("agent", "list", "--status", "idle")
    assert sorted(line.split()[0] for line in out.splitlines()[1:]) == sorted([a1, a2])
    code, out, _ = swarm.cli("agent", "list", "--status", "busy")
    assert (code, out.strip()) == (0, "no agents")
    code, out, _ = swarm.cli("agent", "status", a1)
    assert code == 0
    assert (field(out, "agent"), field(out, "swarm"), field(out, "type")) == (
        a1, swarm.name, "shell",
    )  # fmt: skip
    assert field(out, "status") == "idle"
    assert field(out, "heartbeat").endswith("s ago")
    code, _, err = swarm.cli("agent", "status", "a9")
    assert (code, "error[not_found]: no agent 'a9'" in err) == (1, True)
    # Restart: cfnd answers with the new agent (a new id, same type).
    code, out, _ = swarm.cli("agent", "restart", a2)
    assert code == 0
    assert out.startswith(f"agent {a2} restarted as shell-") and "(shell); now " in out
    new = out.split(" restarted as ")[1].split()[0]
    with swarm.client(timeout_s=60) as cfn:
        assert cfn.agent_status(new, swarm.name).type == "shell"
        # Terminate: a busy agent finishes its task first, then stops (unless forced).
        # cfnd still reports it busy meanwhile; it has no "draining" agent status.
        job, busy = started(swarm, "sleep 1; echo finished")
        code, out, _ = swarm.cli("agent", "terminate", busy)
        assert (code, out.strip()) == (0, f"agent {busy} (shell) terminated; now busy")
        (done,) = cfn.task_wait([job], swarm=swarm.name, timeout_s=60).tasks
        assert (done.status, done.attempts, done.agent) == ("succeeded", 1, busy)
        wait_agents(cfn, swarm.name, 1, status="stopped", agent=busy)
        stops = cfn.events_list(swarm.name, types=["agent.stopped"]).events
        assert {"agent": busy, "requeued": []} in [e.data for e in stops]  # nothing handed back
    code, out, _ = swarm.cli("--json", "agent", "terminate", a1, "--force")
    assert (code, json.loads(out)["status"]) == (0, "stopped")
    code, out, _ = swarm.cli("agent", "terminate", a1)  # already stopped: said so, no change
    assert (code, out.strip()) == (0, f"agent {a1} (shell) terminated; now stopped")


# --------------------------------------------------------------------------- the current swarm


@pytest.fixture
def private_cfnd(cfnd_factory: Callable[..., CfndProcess]) -> CfndProcess:
    """A cfnd of its own: the rules below depend on how many swarms exist."""
    return cfnd_factory("--redis-url", SHARED_REDIS)


def test_current_swarm_from_flag_env_or_the_only_one(
    private_cfnd: CfndProcess, tmp_path: Path
) -> None:
    sock = private_cfnd.socket
    code, out, _ = run(sock, "swarm", "list")
    assert (code, out.strip()) == (
        0, "no swarms (create one with `cfnctl swarm init TOPOLOGY MAX_AGENTS`)",
    )  # fmt: skip
    code, out, _ = run(sock, "--json", "swarm", "list")
    assert json.loads(out) == {"swarms": [], "current": None}
    code, _, err = run(sock, "task", "list")
    assert code == 1
    assert "error[not_found]: there is no swarm yet; create one with `cfnctl swarm init" in err
    code, _, err = run(sock, "events", "--follow")
    assert (code, "no swarm yet" in err) == (1, True)
    assert run(sock, "swarm", "init", "mesh", "4", "--name", "one")[0] == 0
    # One swarm: no --swarm needed.
    assert run(sock, "run", "echo x", "--type", "shell")[0] == 0
    code, out, err = run(sock, "task", "list")
    assert (code, len(out.splitlines())) == (0, 2), err
    assert run(sock, "swarm", "init", "ring", "4", "--name", "two")[0] == 0
    # The last one initialised is the current one (tests/test_cli_spellings.py has more).
    code, out, err = run(sock, "task", "list")
    assert (code, out.strip()) == (0, "no tasks"), err
    # With no current swarm recorded, several swarms need a choice.
    code, _, err = run(sock, "task", "list", env={"CFN_CONTEXT_FILE": str(tmp_path / "none")})
    assert code == 1
    assert "error[invalid_args]: there are several swarms (one, two)" in err
    assert "--swarm, CFN_SWARM or `cfnctl swarm use ID`" in err
    # --swarm, then CFN_SWARM, name the swarm; the flag wins over the variable.
    code, out, _ = run(sock, "--swarm", "two", "task", "list")
    assert (code, out.strip()) == (0, "no tasks")
    code, out, _ = run(sock, "task", "list", env={"CFN_SWARM": "one"})
    assert (code, len(out.splitlines())) == (0, 2)
    code, out, _ = run(sock, "--swarm", "two", "task", "list", env={"CFN_SWARM": "one"})
    assert (code, out.strip()) == (0, "no tasks")
    code, _, err = run(sock, "--swarm", "nope", "agent", "list")
    assert code == 1
    assert "error[not_found]: no swarm 'nope'; existing: one, two" in err


def test_swarm_init_respects_the_daemons_limits(private_cfnd: CfndProcess) -> None:
    sock = private_cfnd.socket
    code, _, err = run(sock, "config", "set", "limits.max_agents_per_swarm", "10")
    assert code == 0, err
    code, _, err = run(sock, "swarm", "init", "mesh", "20")
    assert code == 1
    assert "error[invalid_args]: max_agents 20 exceeds this daemon's limit 10" in err
    code, out, _ = run(sock, "--json", "swarm", "list")
    assert json.loads(out) == {"swarms": [], "current": None}
    assert run(sock, "swarm", "init", "mesh", "10", "--name", "a")[0] == 0
    assert run(sock, "config", "set", "limits.max_swarms", "1")[0] == 0
    code, _, err = run(sock, "swarm", "init", "mesh", "4", "--name", "b")
    assert code == 1
    assert "error[conflict]: this daemon already has 1 swarms (limits.max_swarms)" in err
    code, _, err = run(sock, "swarm", "init", "ring", "4", "--name", "a", "--force")
    assert code == 0, err  # replacing one is not one more
    # Limits lowered later hold new swarms, not the reset of one that exists.
    assert run(sock, "swarm", "init", "mesh", "10", "--name", "a", "--force")[0] == 0
    assert run(sock, "config", "set", "limits.max_agents_per_swarm", "4")[0] == 0
    code, out, err = run(sock, "--swarm", "a", "swarm", "reset", "--force")
    assert (code, out.strip()) == (0, "swarm a reset; no agents"), err
    code, out, _ = run(sock, "--json", "swarm", "list")
    assert [(s["id"], s["max_agents"]) for s in json.loads(out)["swarms"]] == [("a", 10)]
