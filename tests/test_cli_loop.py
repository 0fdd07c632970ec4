"""``cfnctl loop`` (and the clients' ``loop_*`` methods) against a real cfnd whose
agents run the example implementer, validators and owner (examples/agents/).

The runs share one swarm per module (``loops``), so the agents cfnd recruits for
one run are reused by the next; a test tells its runs apart by their ids. The
agent types (tests/cli_support.py): ``impl`` (confidence 0.9), ``impl-gate`` (fails
the gate once per round), ``check`` (approves), ``check-r2`` (approves from round
2), ``check-never`` (always rejects) and ``po`` (owner: DEFER, backlog "docs;tests").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from cfn_client.api import AsyncClient, Client
from cfn_client.cli.commands import loop as loop_cmd
from cfn_client.cli.render import loop as render_loop
from cfn_client.wire.errors import Conflict, InvalidArgs
from cfn_client.wire.schema.loop import LoopBacklogResult, RunInfo
from cfn_client.wire.schema.swarm import Event
from tests.cli_support import (
    Swarm,
    destroy,
    field,
    header,
    json_lines,
    new_swarm_name,
    swarm,
)
from tests.daemon_proc import CfndProcess

__all__ = ["swarm"]  # fixture, imported for pytest

TEAM = ("--implementers", "impl", "--validators", "check")


@pytest.fixture(scope="module")
def loops(shared_cfnd: CfndProcess) -> Iterator[Swarm]:
    """One swarm for this module's runs (room for every agent type they use)."""
    name = new_swarm_name()
    with Client(shared_cfnd.socket, timeout_s=60) as cfn:
        cfn.swarm_init("mesh", 50, name=name)  # runs recruit afresh when agents are busy
    try:
        yield Swarm(shared_cfnd.socket, name)
    finally:
        destroy(shared_cfnd.socket, name)


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if stdout were a terminal: `loop TASK` follows by default."""
    monkeypatch.setattr(loop_cmd, "stdout_is_terminal", lambda: True)


def start(s: Swarm, *args: str) -> str:
    """Start a run (detached: no terminal) and return its id."""
    code, out, err = s.cli("loop", *args)
    assert code == 0, err
    (run,) = out.split()
    assert out == f"{run}\n"
    return run


def info(s: Swarm, run: str) -> RunInfo:
    with s.client(timeout_s=60) as cfn:
        return cfn.loop_status(run, s.name)


def agent_types(s: Swarm, ids: list[str]) -> list[str]:
    with s.client(timeout_s=60) as cfn:
        return [cfn.agent_status(a, s.name).type for a in ids]


def to_rest(s: Swarm, run: str) -> int:
    """Follow the run until it finishes or escalates; the exit code of `loop follow`."""
    code, _, err = s.cli("loop", "follow", run)
    assert "Traceback" not in err
    return code


# --------------------------------------------------------------------------- start


def test_start_detaches_without_a_terminal_and_prints_the_id(loops: Swarm) -> None:
    run = start(loops, "add a flag", *TEAM)
    assert run.startswith("run-")
    code, out, _ = loops.cli("--json", "loop", "x", "--detach", *TEAM)
    doc = json.loads(out)
    assert (code, doc["id"].startswith("run-"), doc["task"], doc["swarm"]) == (
        0, True, "x", loops.name,
    )  # fmt: skip
    assert doc["status"] in ("loop3", "loop2", "done")
    assert to_rest(loops, run) == 0
    assert to_rest(loops, doc["id"]) == 0
    # No types: cfnd sizes the team (medium: coder x2 and four validators) and refuses
    # at once when a type cannot run here, rather than starting a run that cannot work.
    code, _, err = loops.cli("loop", "add a flag")
    assert code == 1
    assert "error[invalid_args]: agent type 'coder' cannot run" in err


def test_start_passes_every_option(loops: Swarm) -> None:
    run = start(
        loops, "--phase", "p1", "add a flag", "--max-loop2", "3", "--max-loop3", "4",
        "--implementers", "impl, impl", "--validators", "check", "--validators", "check-r2",
        "--owner", "po",
    )  # fmt: skip
    got = info(loops, run)
    assert (got.task, got.phase, got.max_loop2, got.max_loop3) == ("add a flag", "p1", 3, 4)
    assert agent_types(loops, got.implementers) == ["impl", "impl"]
    assert len(set(got.implementers)) == 2  # one agent per slot
    assert agent_types(loops, got.validators) == ["check", "check-r2"]
    assert got.owner is not None and agent_types(loops, [got.owner]) == ["po"]
    code, out, _ = loops.cli("loop", "cancel", run)
    assert (code, out) == (0, f"run {run} cancelled; now cancelled\n")


@pytest.mark.parametrize(
    ("before", "after", "task"),
    [
        (["loop", "start"], ["x"], "x"),
        (["loop"], ["--", "status"], "status"),
        (["loop", "--max-loop2", "2"], ["--", "list"], "list"),
        (["loop", "start"], ["--", "--dry-run"], "--dry-run"),
        (["cfn-loop"], ["y"], "y"),
        (["cfn-loop"], ["--", "follow"], "follow"),
        (["loop"], ["--", "lsit"], "lsit"),
        (["loop"], ["fix it"], "fix it"),
    ],
)
def test_start_spellings(loops: Swarm, before: list[str], after: list[str], task: str) -> None:
    code, out, err = loops.cli(*before, *TEAM, *after)
    assert code == 0, err
    (run,) = out.split()
    assert info(loops, run).task == task
    loops.cli("loop", "cancel", run)


# --------------------------------------------------------------------------- follow


def test_start_follows_on_a_terminal_then_backlog(loops: Swarm, terminal: None) -> None:
    code, out, err = loops.cli(
        "loop", "add a flag", "--max-loop2", "3", "--implementers", "impl-gate",
        "--validators", "check-r2", "--owner", "po",
    )  # fmt: skip
    assert (code, err) == (0, ""), err
    lines = out.splitlines()
    run = lines[0].split()[1]
    got = info(loops, run)
    (impl,), (val,), po = got.implementers, got.validators, got.owner
    assert lines[0] == f"run {run} started on swarm {loops.name}: add a flag"
    assert lines[1] == (
        f"  implementers {impl}; validators {val}; owner {po}; "
        "at most 3 round(s) of 10 iteration(s)"
    )
    summary_at = lines.index("")
    events = lines[2:summary_at]
    expected = [
        ("", f"started: add a flag (implementers {impl}; validators {val}; owner {po})"),
        ("loop3 round 1/3 iter 1/10", f"implementers working: {impl}"),
        ("loop3 round 1/3 iter 1/10", f"{impl} done, confidence 0.50"),
        ("loop3 round 1/3 iter 1/10", "gate FAILED: lowest 0.50 < 0.75, mean 0.50 < 0.80"),
        ("loop3 round 1/3 iter 2/10", f"implementers working: {impl}"),
        ("loop3 round 1/3 iter 2/10", f"{impl} done, confidence 0.90"),
        ("loop3 round 1/3 iter 2/10", "gate passed: lowest 0.90 >= 0.75, mean 0.90 >= 0.80"),
        ("loop2 round 1/3", f"validators voting: {val}"),
        ("loop2 round 1/3", f"{val} REJECTS, confidence 0.95"),
        ("loop2 round 1/3", "round failed: score 0.00 < 0.90, approvals 0 of 1 vote(s) "
                            "(quorum 1), faulty -, suspects -"),
        ("loop3 round 2/3 iter 1/10", f"implementers working: {impl}"),
        ("loop3 round 2/3 iter 1/10", f"{impl} done, confidence 0.50"),
        ("loop3 round 2/3 iter 1/10", "gate FAILED: lowest 0.50 < 0.75, mean 0.50 < 0.80"),
        ("loop3 round 2/3 iter 2/10", f"implementers working: {impl}"),
        ("loop3 round 2/3 iter 2/10", f"{impl} done, confidence 0.90"),
        ("loop3 round 2/3 iter 2/10", "gate passed: lowest 0.90 >= 0.75, mean 0.90 >= 0.80"),
        ("loop2 round 2/3", f"validators voting: {val}"),
        ("loop2 round 2/3", f"{val} approves, confidence 0.95"),
        ("loop2 round 2/3", "round passed: score 0.95 >= 0.90, approvals 1 of 1 vote(s) "
                            "(quorum 1), faulty -, suspects -"),
        ("loop4", "owner decided DEFER: DEFER: decided by the example owner "
                  "(backlog: 2 item(s))"),
        ("", "finished: done (DEFER): DEFER: decided by the example owner"),
    ]  # fmt: skip
    assert len(events) == len(expected), "\n".join(events)
    for line, (where, what) in zip(events, expected, strict=True):
        assert line[14:].startswith(where.ljust(render_loop.WHERE_WIDTH) + "  "), line
        assert line.endswith(what), line
    assert not [line for line in events if "run=" in line or "feedback" in line]
    summary = "\n".join(lines[summary_at:])
    assert (field(summary, "status"), field(summary, "decision")) == ("done", "DEFER")
    assert field(summary, "rounds") == "2 of at most 3"
    assert field(summary, "backlog") == "2 item(s)"
    assert field(summary, "next") == f"cfnctl loop backlog {run}"
    code, out, err = loops.cli("loop", "backlog", run)
    assert (code, out, err) == (0, "docs\ntests\n", "")
    code, out, _ = loops.cli("--json", "loop", "backlog", run)
    assert json.loads(out) == {"run": run, "items": ["docs", "tests"]}


def test_followed_run_exit_status(loops: Swarm) -> None:
    code, out, err = loops.cli("loop", "x", "--follow", *TEAM)
    assert (code, err) == (0, "")
    assert field(out.split("\n\n")[-1], "status") == "done"
    assert field(out.split("\n\n")[-1], "decision") == "PROCEED"
    code, out, err = loops.cli(
        "loop", "x", "--follow", "--implementers", "impl", "--validators", "check-never",
        "--max-loop2", "1",
    )  # fmt: skip
    assert (code, err) == (5, "")
    run = out.split()[1]
    assert field(out, "reason") == "consensus failed in 1 rounds"
    assert f"cfnctl loop approve {run}" in out
    assert f"cfnctl loop reject {run} --feedback TEXT" in out
    # `loop follow RUN` exits by the same rule; `loop status` always 0.
    assert to_rest(loops, run) == 5
    code, out, _ = loops.cli("loop", "status", run)
    assert (code, field(out, "status").split()[0]) == (0, "escalated")
    cancelled = start(loops, "y", *TEAM)
    assert loops.cli("loop", "cancel", cancelled, "--reason", "wrong task")[0] == 0
    assert to_rest(loops, cancelled) == 6
    assert info(loops, cancelled).status == "cancelled"


def test_follow_json_lines(loops: Swarm) -> None:
    code, out, err = loops.cli("--json", "loop", "x", "--follow", *TEAM)
    assert (code, err) == (0, "")
    docs = json_lines(out)
    run = docs[0]["id"]
    assert (docs[0]["status"], docs[0]["task"]) == ("loop3", "x")  # the run as started
    types = [d["type"] for d in docs[1:-1]]
    assert types[0] == "loop.started" and types[-1] == "loop.finished"
    assert {"loop.iteration", "loop.implementer_done", "loop.gate", "loop.vote"} <= set(types)
    assert all(d["data"]["run"] == run for d in docs[1:-1])
    assert (docs[-1]["id"], docs[-1]["status"], docs[-1]["decision"]) == (run, "done", "PROCEED")
    # `loop follow --json`: no header, the events, then the run as it ended.
    code, out, _ = loops.cli("--json", "loop", "follow", run)
    again = json_lines(out)
    assert code == 0
    assert [d.get("type") for d in again[:-1]] == types
    assert again[-1]["status"] == "done"


def test_loop_follow_command(loops: Swarm) -> None:
    run = start(loops, "add a flag", "--max-loop2", "4", *TEAM)
    code, out, err = loops.cli("loop", "follow", run)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"run {run} on swarm {loops.name} (")
    assert lines[0].endswith("): add a flag")
    assert any("loop3 round 1/4 iter 1/10" in line for line in lines)
    code, _, err = loops.cli("loop", "follow", "run-nope")
    assert code == 1
    assert "error[not_found]: no run 'run-nope'" in err


def test_follow_ctrl_c_leaves_the_run_going(loops: Swarm, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: render_loop.FollowView, event: Event) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(render_loop.FollowView, "line", interrupted)
    code, out, err = loops.cli("loop", "x", "--follow", *TEAM)
    assert code == 130
    assert out.startswith("run run-")
    assert "stopped following; the run goes on" in err
    monkeypatch.undo()
    run = out.split()[1]
    assert to_rest(loops, run) == 0  # nothing cancelled it
    assert info(loops, run).status == "done"


# --------------------------------------------------------------------------- inspect, decide


def test_escalated_run_status_rounds_reject_extend_approve(loops: Swarm) -> None:
    run = start(
        loops, "x", "--implementers", "impl", "--validators", "check-never", "--max-loop2", "2"
    )
    assert to_rest(loops, run) == 5
    code, out, _ = loops.cli("loop", "status", run)
    assert code == 0
    head, table = out.split("\n\n")
    assert (field(head, "run"), field(head, "swarm"), field(head, "task")) == (run, loops.name, "x")
    assert field(head, "status") == "escalated (waiting for a human: approve or reject)"
    assert (field(head, "round"), field(head, "iteration")) == ("2/2", "1/10")
    assert (field(head, "pending"), field(head, "owner")) == ("-", "built-in rule")
    assert field(head, "reason") == "consensus failed in 2 rounds"
    feedback = field(head, "feedback")
    assert "empty input crashes" in feedback or feedback.endswith("...")
    assert len(feedback) <= render_loop.FEEDBACK_EXCERPT
    assert field(head, "next") == (
        f"`cfnctl loop approve {run}` (done, PROCEED) or "
        f"`cfnctl loop reject {run} --feedback TEXT` (one more round)"
    )
    assert header(table) == ["ROUND", "STATUS", "SCORE", "APPROVALS", "VOTES", "FAULTY",
                             "SUSPECTS", "REASON"]  # fmt: skip
    for n, row in enumerate(table.splitlines()[1:], start=1):
        assert row.split()[:7] == [str(n), "failed", "0.00", "0", "1", "-", "-"]
    code, out, _ = loops.cli("--json", "loop", "status", run)
    assert [r["status"] for r in msgspec.convert(json.loads(out), RunInfo).rounds] == [
        "failed", "failed",
    ]  # fmt: skip
    # Approve needs an escalated run; reject gives it one more round (it escalates again).
    code, out, _ = loops.cli("loop", "reject", run, "--feedback", "handle empty input")
    assert (code, out) == (0, f"run {run} rejected; now loop3, round 3/3\n")
    assert to_rest(loops, run) == 5
    code, _, err = loops.cli("loop", "extend", run, "--max-loop2", "2")
    assert code == 1
    assert "max_loop2 must be in 4..100, got 2" in err
    code, out, _ = loops.cli("loop", "extend", run, "--max-loop2", "4")
    assert (code, out) == (0, f"run {run} extended to 4 rounds; now loop3, round 4/4\n")
    assert to_rest(loops, run) == 5
    code, out, _ = loops.cli("loop", "approve", run, "--reason", "good enough")
    assert (code, out) == (0, f"run {run} approved; now done (PROCEED)\n")
    assert info(loops, run).outcome_reason == "good enough"
    code, _, err = loops.cli("loop", "approve", run)
    assert code == 1
    assert f"error[conflict]: run {run} is done" in err
    code, out, _ = loops.cli("--json", "loop", "cancel", run)
    assert code == 1 and json.loads(out)["error"]["code"] == "conflict"  # too late


def test_list(loops: Swarm, swarm: Swarm) -> None:
    code, out, _ = swarm.cli("loop", "list")
    assert (code, out) == (0, 'no runs (start one with `cfnctl loop "TASK"`)\n')
    first = start(loops, "--phase", "auth", "one", *TEAM)
    assert to_rest(loops, first) == 0
    code, out, _ = loops.cli("loop", "list")
    assert header(out) == ["ID", "STATUS", "ROUND", "ITER", "DECISION", "PHASE", "AGE", "TASK"]
    (row,) = [line.split() for line in out.splitlines()[1:] if line.startswith(first)]
    assert row[:6] == [first, "done", "1/10", "1/10", "PROCEED", "auth"]
    assert row[-1] == "one"
    code, out, _ = loops.cli("--json", "loop", "list", "--status", "done", "--limit", "500")
    runs = json.loads(out)["runs"]
    assert first in [r["id"] for r in runs]
    assert {r["status"] for r in runs} == {"done"}
    code, out, _ = loops.cli("--json", "loop", "list", "--limit", "1")
    assert len(json.loads(out)["runs"]) == 1


# --------------------------------------------------------------------------- API


def test_client_loop_methods(loops: Swarm) -> None:
    with loops.client(timeout_s=60) as cfn:
        started = cfn.loop_start("t", swarm=loops.name, implementers=["impl"],
                                 validators=("check",), max_loop3=2)  # fmt: skip
        assert isinstance(started, RunInfo)
        assert (started.max_loop3, len(started.implementers), len(started.validators)) == (2, 1, 1)
        with cfn.loop_follow(started.id, loops.name) as events:
            got = list(events)
        assert events.done
        assert {type(e) for e in got} == {Event}
        assert got[0].type == "loop.started" and got[-1].type == "loop.finished"
        done = cfn.loop_status(started.id, loops.name)  # the same connection, after the stream
        assert (done.status, done.decision) == ("done", "PROCEED")
        assert started.id in [r.id for r in cfn.loop_list(loops.name, status="done").runs]
        assert cfn.loop_backlog(started.id, swarm=loops.name) == LoopBacklogResult(
            run=started.id, items=[]
        )
        with pytest.raises(Conflict):
            cfn.loop_approve(started.id, swarm=loops.name)
        with pytest.raises(InvalidArgs, match="max_loop2"):
            cfn.loop_extend(started.id, "many", swarm=loops.name)  # type: ignore[arg-type]


async def test_async_client_loop_methods(loops: Swarm) -> None:
    async with AsyncClient(loops.socket, timeout_s=60) as cfn:
        started = await cfn.loop_start(
            "t", swarm=loops.name, implementers=["impl"], validators=["check-never"],
            owner="po", phase="p", max_loop2=1,
        )  # fmt: skip
        assert started.phase == "p"
        async with cfn.loop_follow(started.id, swarm=loops.name) as events:
            got: list[Any] = [e async for e in events]
        assert got[-1].type == "loop.escalated"
        assert (await cfn.loop_status(started.id, loops.name)).status == "escalated"
        assert (await cfn.loop_extend(started.id, 2, swarm=loops.name)).max_loop2 == 2
        async with cfn.loop_follow(started.id, swarm=loops.name) as events:
            async for _ in events:
                pass
        assert (await cfn.loop_approve(started.id, "ok", swarm=loops.name)).decision == "PROCEED"
        assert (await cfn.loop_list(loops.name)).runs
        assert (await cfn.loop_backlog(started.id, swarm=loops.name)).items == []
        with pytest.raises(Conflict):
            await cfn.loop_cancel(started.id, swarm=loops.name)
