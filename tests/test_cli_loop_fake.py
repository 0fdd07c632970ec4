"""``cfnctl loop`` (and the clients' ``loop_*`` methods) against a fake cfnd.

``LoopFake`` adds CFN loop runs to the swarm fake: ``loop.start`` records a run,
``loop.follow`` streams a scripted list of events, then applies a scripted
ending to the run (done/escalated/failed...) and ends the stream, as cfnd does
when a run reaches a final or escalated state. Only the client side is tested
here: what each command sends, how it renders, and how it exits.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from cfn_client.api import AsyncClient, Client
from cfn_client.cli.commands import loop as loop_cmd
from cfn_client.cli.main import cfnctl
from cfn_client.cli.render import loop as render_loop
from cfn_client.wire.errors import EXIT_UNREACHABLE, CfnError, Conflict, InvalidArgs, NotFound
from cfn_client.wire.protocol import EventFrame, Request, Response, decode_args, error_response
from cfn_client.wire.schema.loop import (
    SIZING,
    LoopBacklogResult,
    LoopFollowArgs,
    LoopListResult,
    RunInfo,
)
from cfn_client.wire.schema.swarm import Event
from tests.test_cli_swarm_fake import T0, SwarmFake, field, header, run
from tests.test_client_connection import sock_dir

__all__ = ["sock_dir"]  # fixture, imported for pytest


def consensus(rnd: int, status: str, score: float, approvals: int, **kw: Any) -> dict[str, Any]:
    """A consensus record as cfnd stores it per round (and sends in ``loop.round``)."""
    return {
        "round": rnd, "status": status, "score": score, "approvals": approvals,
        "votes_counted": 3, "quorum": 3, "f": 0, "accepted": ["v1", "v2", "v3"],
        "rejected": [], "equivocations": [], "faulty": [], "suspects": {}, "missing": [],
        "feedback": [{"type": "bug", "severity": "high", "message": "empty input crashes"}],
        "reason": f"score {score}", **kw,
    }  # fmt: skip


GATE = {"gate_threshold": 0.75, "gate_mean": 0.8}
# A run that needs two rounds: the gate fails once, round 1's consensus fails, round 2 passes.
# The data has the shapes cfnd's loop runner emits.
SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("loop.started", {"task": "add a flag", "implementers": ["coder", "coder"],
                      "validators": ["reviewer", "tester"], "owner": None}),
    ("loop.iteration", {"round": 1, "iteration": 1, "max_loop3": 10, "agents": ["a1", "a2"]}),
    ("loop.implementer_done", {"agent": "a1", "ok": True, "round": 1, "iteration": 1,
                               "confidence": 0.82, "reason": "done; tests pass"}),
    ("loop.implementer_done", {"agent": "a2", "ok": False, "round": 1, "iteration": 1,
                               "confidence": 0.0, "reason": ""}),
    ("loop.gate", {"round": 1, "iteration": 1, "passed": False, "mean": 0.41, "low": 0.0,
                   **GATE}),
    ("loop.iteration", {"round": 1, "iteration": 2, "max_loop3": 10, "agents": ["a1", "a2"]}),
    ("loop.gate", {"round": 1, "iteration": 2, "passed": True, "mean": 0.88, "low": 0.81,
                   **GATE}),
    ("loop.validating", {"round": 1, "agents": ["v1", "v2", "v3"]}),
    ("loop.vote", {"round": 1, "validator": "v1", "approve": True, "confidence": 0.93,
                   "verified": True}),
    ("loop.vote", {"round": 1, "validator": "v2", "approve": False, "confidence": 0.7,
                   "verified": False}),
    ("loop.round", {"threshold": 0.9,
                    **consensus(1, "failed", 0.61, 1, suspects={"v3": "equivocated"})}),
    ("loop.round", {"threshold": 0.9, **consensus(2, "passed", 0.92, 3)}),
    ("loop.owner", {"round": 2, "iteration": 1, "decision": "DEFER",
                    "reason": "ship it; docs later", "backlog": ["write docs"]}),
    ("loop.human", {"round": 2, "iteration": 1, "outcome": "approved"}),
    ("loop.weird", {"x": 1, "round": 2}),
    ("loop.finished", {"status": "done", "decision": "DEFER", "reason": "ship it; docs later"}),
]  # fmt: skip

ENDINGS: dict[str, dict[str, Any]] = {
    "proceed": {"status": "done", "decision": "PROCEED", "outcome_reason": "consensus 0.92"},
    "defer": {"status": "done", "decision": "DEFER", "outcome_reason": "ship it",
              "backlog": ["write docs", "more\ntests"]},
    "escalated": {"status": "escalated", "decision": "ESCALATE",
                  "outcome_reason": "consensus failed in 3 rounds"},
    "failed": {"status": "failed", "outcome_reason": "executor crashed"},
    "cancelled": {"status": "cancelled", "outcome_reason": "by alice"},
    "unfinished": {"status": "loop2"},
}  # fmt: skip

ROUNDS = [
    consensus(1, "failed", 0.61, 1, suspects={"v3": "equivocated"}),
    consensus(2, "passed", 0.92, 3, faulty=["v2"]),
]


class LoopFake(SwarmFake):
    """The swarm fake plus runs; ``script``/``ending`` drive what a follow streams."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.runs: dict[str, RunInfo] = {}
        self.script = list(SCRIPT)
        self.ending = dict(ENDINGS["proceed"])
        self._run_ids = itertools.count(1)
        self._loop_lock = threading.Lock()

    def _run(self, a: Any) -> RunInfo:
        s = self._swarm(a.swarm)
        found = self.runs.get(a.run)
        if found is None or found.swarm != s.id:
            raise NotFound(f"no run {a.run!r} in swarm {s.id}", details={"run": a.run})
        return found

    def op_loop_start(self, a: Any) -> RunInfo:
        s = self._swarm(a.swarm)
        # Like cfnd: no types listed means a team sized by complexity (medium).
        sized_impl, sized_val = SIZING[a.complexity or "medium"]
        a = msgspec.structs.replace(
            a,
            implementers=list(a.implementers) or list(sized_impl),
            validators=list(a.validators) or list(sized_val),
        )
        info = RunInfo(
            id=f"r{next(self._run_ids)}", swarm=s.id, task=a.task, status="loop3",
            phase=a.phase, loop2_round=1, loop3_iteration=1, max_loop2=a.max_loop2 or 10,
            max_loop3=a.max_loop3 or 10, implementers=list(a.implementers),
            validators=list(a.validators), owner=a.owner, pending=list(a.implementers),
            created_ms=T0, updated_ms=T0,
        )  # fmt: skip
        self.runs[info.id] = info
        return info

    def op_loop_status(self, a: Any) -> RunInfo:
        return self._run(a)

    def op_loop_list(self, a: Any) -> LoopListResult:
        s = self._swarm(a.swarm)
        runs = [r for r in self.runs.values() if r.swarm == s.id]
        return LoopListResult(
            runs=[r for r in runs if a.status is None or r.status == a.status][: a.limit]
        )

    def op_loop_approve(self, a: Any) -> RunInfo:
        r = self._run(a)
        if r.status != "escalated":
            raise Conflict(f"run {r.id} is {r.status}, not escalated", details={"run": r.id})
        r.status, r.decision = "done", "PROCEED"
        r.outcome_reason = a.reason or "approved by a human"
        return r

    def op_loop_reject(self, a: Any) -> RunInfo:
        r = self._run(a)
        r.status, r.feedback, r.decision = "loop3", a.feedback, None
        r.loop2_round += 1
        r.max_loop2 = max(r.max_loop2, r.loop2_round)
        return r

    def op_loop_extend(self, a: Any) -> RunInfo:
        r = self._run(a)
        if a.max_loop2 <= r.max_loop2:
            raise InvalidArgs(
                f"max_loop2 must exceed {r.max_loop2}", details={"value": a.max_loop2}
            )
        r.max_loop2 = a.max_loop2
        return r

    def op_loop_cancel(self, a: Any) -> RunInfo:
        r = self._run(a)
        r.status, r.outcome_reason = "cancelled", a.reason
        return r

    def op_loop_backlog(self, a: Any) -> LoopBacklogResult:
        r = self._run(a)
        return LoopBacklogResult(run=r.id, items=list(r.backlog))

    def _handle(self, conn: socket.socket, lock: threading.Lock, req: Request) -> bool:
        if req.op != "loop.follow":
            return super()._handle(conn, lock, req)
        try:
            with self._loop_lock:
                r = self._run(decode_args(LoopFollowArgs, req.args))
        except CfnError as err:
            self._write(conn, lock, error_response(req.id, err))
            return True
        for i, (type_, data) in enumerate(self.script):
            event = Event(
                id=f"{T0 + i}-0", ts_ms=T0 + i * 1000, swarm=r.swarm, type=type_,
                data={"run": r.id, **data},
            )  # fmt: skip
            self._write(conn, lock, EventFrame(id=req.id, event=event))
        for key, value in self.ending.items():
            setattr(r, key, value)
        if r.status != "loop2":
            r.pending, r.rounds, r.loop2_round = [], list(ROUNDS), 2
        self._write(conn, lock, Response(id=req.id, ok=True, result=None))
        return True


@pytest.fixture
def fake(sock_dir: Path) -> Iterator[LoopFake]:
    """A loop fake holding one swarm ``s1``."""
    f = LoopFake(sock_dir / "l.sock")
    with f:
        code, _, err = run(f, "swarm", "init", "mesh", "8")
        assert code == 0, err
        f.received.clear()
        yield f


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if stdout were a terminal: `loop TASK` follows by default."""
    monkeypatch.setattr(loop_cmd, "stdout_is_terminal", lambda: True)


def started(fake: LoopFake, *extra: str) -> str:
    code, out, err = run(fake, "loop", "add a flag", "--detach", *extra)
    assert code == 0, err
    return out.strip()


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


# --------------------------------------------------------------------------- start


def test_start_detaches_without_a_terminal_and_prints_the_id(fake: LoopFake) -> None:
    code, out, err = run(fake, "loop", "add a flag")
    assert (code, out, err) == (0, "r1\n", "")
    # None lists are left out: the schema's default team applies (and equals the default).
    assert fake.sent("loop.start") == [{"task": "add a flag"}]
    assert fake.runs["r1"].implementers == ["coder", "coder"]
    assert fake.runs["r1"].validators == ["reviewer", "tester", "security-specialist", "reviewer"]
    assert fake.sent("loop.follow") == []
    code, out, _ = run(fake, "--json", "loop", "x", "--detach")
    doc = json.loads(out)
    assert (code, doc["id"], doc["status"], doc["task"]) == (0, "r2", "loop3", "x")


def test_start_sends_every_option(fake: LoopFake) -> None:
    code, out, err = run(
        fake, "--swarm", "s1", "loop", "--phase", "p1", "add a flag", "--max-loop2", "3",
        "--max-loop3", "4", "--implementers", "coder, coder,architect", "--validators",
        "reviewer", "--validators", "tester", "--owner", "product-owner", "--detach",
    )  # fmt: skip
    assert (code, out) == (0, "r1\n"), err
    assert fake.sent("loop.start") == [
        {"swarm": "s1", "task": "add a flag", "phase": "p1", "max_loop2": 3, "max_loop3": 4,
         "implementers": ["coder", "coder", "architect"], "validators": ["reviewer", "tester"],
         "owner": "product-owner"}
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "task"),
    [
        (["loop", "start", "x"], "x"),
        (["loop", "--", "status"], "status"),
        (["loop", "--max-loop2", "2", "--", "list"], "list"),
        (["loop", "start", "--", "--dry-run"], "--dry-run"),
        (["cfn-loop", "y"], "y"),
        (["cfn-loop", "--", "follow"], "follow"),
        (["loop", "--", "lsit"], "lsit"),
        (["loop", "fix it"], "fix it"),
        (["loop", "refactor"], "refactor"),
    ],
)
def test_start_spellings(fake: LoopFake, args: list[str], task: str) -> None:
    code, out, err = run(fake, *args, "--detach") if "--" not in args else run(fake, *args)
    assert (code, out) == (0, "r1\n"), err
    assert fake.sent("loop.start")[0]["task"] == task


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["loop", "x", "--max-loop2", "0"], "0 is not in the range 1<=x<=100"),
        (["loop", "x", "--max-loop3", "101"], "101 is not in the range 1<=x<=100"),
        (["loop", "x", "--max-loop2", "two"], "'two' is not a valid integer"),
        (["loop", "x", "--follow", "--detach"], "--follow and --detach exclude each other"),
        (["loop", "x", "--implementers", "coder,,tester"], "empty agent type"),
        (["loop", "x", "--validators", ""], "empty agent type"),
        (["loop", "start"], "Missing argument"),
        (["loop", "--phase", "p"], "Missing argument"),
        (["cfn-loop", "x", "--max-loop2", "0"], "not in the range"),
        (["loop", "extend", "r1"], "Missing option '--max-loop2'"),
        (["loop", "extend", "r1", "--max-loop2", "0"], "not in the range"),
        (["loop", "list", "--status", "sleeping"], "'sleeping' is not one of"),
        (["loop", "status"], "Missing argument 'RUN'"),
        (["loop", "lsit"], "no command 'lsit'; did you mean `loop list`?"),
        (["loop", "statsu"], "To start a run of the task 'statsu': cfnctl loop -- statsu"),
    ],
)
def test_usage_errors_exit_2_without_a_request(
    fake: LoopFake, args: list[str], message: str
) -> None:
    code, _, err = run(fake, *args)
    assert code == 2
    assert message in err
    code, out, _ = run(fake, "--json", *args)
    doc = json.loads(out)
    assert (code, doc["error"]["code"]) == (2, "usage_error")
    assert [r.op for r in fake.received if r.op.startswith("loop.")] == []


def test_help_texts(fake: LoopFake) -> None:
    code, out, _ = run(fake, "loop", "--help")
    assert code == 0
    assert 'Usage: cfnctl loop "TASK" [OPTIONS] | COMMAND [ARGS]...' in out
    assert "cfnctl loop -- status" in out
    for name in ("start", "status", "list", "follow", "approve", "reject", "extend", "backlog",
                 "cancel"):  # fmt: skip
        assert f"\n  {name} " in out
    assert "5    ESCALATED" in out
    code, out, _ = run(fake, "loop", "a task", "--help")
    assert (code, out.splitlines()[0]) == (0, 'Usage: cfnctl loop start [OPTIONS] "TASK"')
    code, out, _ = run(fake, "cfn-loop", "-h")
    assert (code, out.splitlines()[0]) == (0, 'Usage: cfnctl cfn-loop [OPTIONS] "TASK"')
    code, out, _ = run(fake, "--help")
    assert "5  `loop` (followed): the run escalated" in out
    assert "6  `loop` (followed): the run failed or was cancelled" in out
    assert fake.received == []


# --------------------------------------------------------------------------- follow


def test_start_follows_on_a_terminal(fake: LoopFake, terminal: None) -> None:
    fake.ending = dict(ENDINGS["defer"])
    code, out, err = run(fake, "loop", "add a flag", "--max-loop2", "3")
    assert (code, err) == (0, ""), err
    lines = out.splitlines()
    assert lines[0] == "run r1 started on swarm s1: add a flag"
    assert lines[1] == (
        "  implementers coder, coder; validators reviewer, tester, security-specialist, reviewer; "
        "owner built-in rule; at most 3 round(s) of 10 iteration(s)"
    )
    events = lines[2 : 2 + len(SCRIPT)]
    assert events[0].endswith(
        "  started: add a flag (implementers coder, coder; validators reviewer, tester)"
    )
    assert "loop3 round 1/3 iter 1/10" in events[1]
    assert events[1].endswith("implementers working: a1, a2")
    assert events[2].endswith("a1 done, confidence 0.82: done; tests pass")
    assert events[3].endswith("a2 FAILED, confidence 0.00")
    assert events[4].endswith("gate FAILED: lowest 0.00 < 0.75, mean 0.41 < 0.80")
    assert "loop3 round 1/3 iter 2/10" in events[5]
    assert events[6].endswith("gate passed: lowest 0.81 >= 0.75, mean 0.88 >= 0.80")
    assert "loop2 round 1/3" in events[7]
    assert events[7].endswith("validators voting: v1, v2, v3")
    assert events[8].endswith("v1 approves, confidence 0.93")
    assert events[9].endswith("v2 REJECTS, confidence 0.70 (UNVERIFIED signature)")
    assert events[10].endswith(
        "round failed: score 0.61 < 0.90, approvals 1 of 3 vote(s) (quorum 3), faulty -, "
        "suspects v3"
    )
    assert "loop2 round 2/3" in events[11]
    assert events[11].endswith(
        "round passed: score 0.92 >= 0.90, approvals 3 of 3 vote(s) (quorum 3), faulty -, "
        "suspects -"
    )
    assert "  loop4  " in events[12]
    assert events[12].endswith("owner decided DEFER: ship it; docs later (backlog: 1 item(s))")
    assert "  human  " in events[13]
    assert events[13].endswith("  approved")
    assert events[14].endswith("  loop.weird  x=1 round=2")  # unknown types: generic
    assert events[15].endswith("finished: done (DEFER): ship it; docs later")
    assert not [line for line in events if "run=" in line or "feedback" in line]
    summary = "\n".join(lines[2 + len(SCRIPT) :])
    assert field(summary, "status") == "done"
    assert field(summary, "decision") == "DEFER"
    assert field(summary, "rounds") == "2 of at most 3"
    assert field(summary, "reason") == "ship it"
    assert field(summary, "backlog") == "2 item(s)"
    assert field(summary, "next") == "cfnctl loop backlog r1"
    # Start, then the stream, then the final state.
    loop_ops = [(r.op, r.args) for r in fake.received if r.op.startswith("loop.")]
    assert loop_ops == [
        ("loop.start", {"task": "add a flag", "max_loop2": 3}),
        ("loop.follow", {"swarm": "s1", "run": "r1"}),
        ("loop.status", {"swarm": "s1", "run": "r1"}),
    ]


@pytest.mark.parametrize(
    ("ending", "code"),
    [("proceed", 0), ("defer", 0), ("escalated", 5), ("failed", 6), ("cancelled", 6),
     ("unfinished", 1)],
)  # fmt: skip
def test_followed_run_exit_status(fake: LoopFake, ending: str, code: int) -> None:
    fake.ending = dict(ENDINGS[ending])
    got, out, err = run(fake, "loop", "x", "--follow")
    assert got == code, out + err
    status = ENDINGS[ending]["status"]
    assert field(out.split("\n\n")[-1] if "\n\n" in out else out, "status") == status
    if ending == "escalated":
        assert "cfnctl loop approve r1" in out
        assert "cfnctl loop reject r1 --feedback TEXT" in out
        assert field(out, "reason") == "consensus failed in 3 rounds"
    if ending == "unfinished":
        assert "cfnd ended the stream while run r1 is loop2" in err
    else:
        assert err == ""
    # `loop follow RUN` exits by the same rule; `loop status` always 0.
    got, _, _ = run(fake, "loop", "follow", "r1")
    assert got == code
    got, out, _ = run(fake, "loop", "status", "r1")
    assert got == 0
    assert field(out, "status").split()[0] == status


def test_follow_json_lines(fake: LoopFake) -> None:
    code, out, err = run(fake, "--json", "loop", "x", "--follow")
    assert (code, err) == (0, "")
    docs = json_lines(out)
    assert (docs[0]["id"], docs[0]["status"]) == ("r1", "loop3")  # the run as started
    assert [d["type"] for d in docs[1:-1]] == [t for t, _ in SCRIPT]
    assert docs[2]["data"] == {"run": "r1", **SCRIPT[1][1]}
    assert (docs[-1]["id"], docs[-1]["status"], docs[-1]["decision"]) == ("r1", "done", "PROCEED")
    # `loop follow --json`: no header, the events, then the run as it ended.
    fake.ending = dict(ENDINGS["escalated"])
    code, out, _ = run(fake, "--json", "loop", "follow", "r1")
    docs = json_lines(out)
    assert code == 5
    assert [d.get("type") for d in docs[:-1]] == [t for t, _ in SCRIPT]
    assert docs[-1]["status"] == "escalated"


def test_loop_follow_command(fake: LoopFake) -> None:
    started(fake, "--max-loop2", "4")
    fake.received.clear()
    code, out, err = run(fake, "loop", "follow", "r1")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "run r1 on swarm s1 (loop3, round 1/4): add a flag"
    assert "loop3 round 1/4 iter 1/10" in lines[2]
    assert [(r.op, r.args) for r in fake.received if r.op != "hello"] == [
        ("loop.status", {"run": "r1"}),
        ("loop.follow", {"swarm": "s1", "run": "r1"}),
        ("loop.status", {"swarm": "s1", "run": "r1"}),
    ]
    code, _, err = run(fake, "loop", "follow", "r9")
    assert code == 1
    assert "error[not_found]: no run 'r9' in swarm s1" in err


def test_follow_ctrl_c_leaves_the_run_going(
    fake: LoopFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: render_loop.FollowView, event: Event) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(render_loop.FollowView, "line", interrupted)
    code, out, err = run(fake, "loop", "x", "--follow")
    assert code == 130
    assert out.startswith("run r1 started")
    assert "stopped following; the run goes on" in err
    # Nothing cancels the run, and no summary is fetched.
    assert [r.op for r in fake.received if r.op.startswith("loop.")] == [
        "loop.start",
        "loop.follow",
    ]


# --------------------------------------------------------------------------- inspect


def test_status_view_and_rounds_table(fake: LoopFake) -> None:
    fake.ending = dict(ENDINGS["escalated"])
    run(fake, "loop", "x", "--follow", "--owner", "product-owner")
    fake.runs["r1"].feedback = "fix the tests " * 30
    code, out, _ = run(fake, "loop", "status", "r1")
    assert code == 0
    head, table = out.split("\n\n")
    assert field(head, "run") == "r1"
    assert field(head, "status") == "escalated (waiting for a human: approve or reject)"
    assert field(head, "round") == "2/10"
    assert field(head, "iteration") == "1/10"
    assert field(head, "pending") == "-"
    assert field(head, "owner") == "product-owner"
    assert field(head, "decision") == "ESCALATE"
    assert field(head, "reason") == "consensus failed in 3 rounds"
    feedback = field(head, "feedback")
    assert feedback.startswith("fix the tests fix")
    assert feedback.endswith("...")
    assert len(feedback) == render_loop.FEEDBACK_EXCERPT
    assert field(head, "next") == (
        "`cfnctl loop approve r1` (done, PROCEED) or "
        "`cfnctl loop reject r1 --feedback TEXT` (one more round)"
    )
    assert header(table) == ["ROUND", "STATUS", "SCORE", "APPROVALS", "VOTES", "FAULTY",
                             "SUSPECTS", "REASON"]  # fmt: skip
    assert table.splitlines()[1].split() == ["1", "failed", "0.61", "1", "3", "-", "v3", "score",
                                             "0.61"]  # fmt: skip
    assert table.splitlines()[2].split() == ["2", "passed", "0.92", "3", "3", "v2", "-", "score",
                                             "0.92"]  # fmt: skip
    code, out, _ = run(fake, "--json", "loop", "status", "r1")
    assert msgspec.convert(json.loads(out), RunInfo).rounds == ROUNDS
    started(fake)
    code, out, _ = run(fake, "loop", "status", "r2")
    assert field(out, "status") == "loop3 (Loop 3: implementers working)"
    assert field(out, "pending") == "coder, coder"
    assert out.endswith("no consensus rounds yet\n")
    assert fake.sent("loop.status")[-1] == {"run": "r2"}
    code, _, err = run(fake, "loop", "status", "nope")
    assert code == 1
    assert "no run 'nope'" in err


def test_list(fake: LoopFake) -> None:
    code, out, _ = run(fake, "loop", "list")
    assert (code, out) == (0, 'no runs (start one with `cfnctl loop "TASK"`)\n')
    started(fake, "--phase", "auth")
    run(fake, "loop", "second one", "--follow")
    code, out, _ = run(fake, "loop", "list")
    assert header(out) == ["ID", "STATUS", "ROUND", "ITER", "DECISION", "PHASE", "AGE", "TASK"]
    rows = [line.split() for line in out.splitlines()[1:]]
    assert rows[0][:6] == ["r1", "loop3", "1/10", "1/10", "-", "auth"]
    assert rows[1][:6] == ["r2", "done", "2/10", "1/10", "PROCEED", "-"]
    code, out, _ = run(fake, "--json", "loop", "list", "--status", "done", "--limit", "5")
    assert [r["id"] for r in json.loads(out)["runs"]] == ["r2"]
    assert fake.sent("loop.list") == [{}, {}, {"status": "done", "limit": 5}]


def test_backlog(fake: LoopFake) -> None:
    fake.ending = dict(ENDINGS["defer"])
    run(fake, "loop", "x", "--follow")
    code, out, err = run(fake, "loop", "backlog", "r1")
    assert (code, out, err) == (0, "write docs\nmore tests\n", "")
    code, out, _ = run(fake, "--json", "loop", "backlog", "r1")
    assert json.loads(out) == {"run": "r1", "items": ["write docs", "more\ntests"]}
    started(fake)
    code, out, err = run(fake, "loop", "backlog", "r2")
    assert (code, out) == (0, "")
    assert "run r2: no backlog items" in err
    assert fake.sent("loop.backlog") == [{"run": "r1"}, {"run": "r1"}, {"run": "r2"}]


# --------------------------------------------------------------------------- decide


def test_approve_reject_extend_cancel(fake: LoopFake) -> None:
    fake.ending = dict(ENDINGS["escalated"])
    run(fake, "loop", "x", "--follow")
    code, out, _ = run(fake, "loop", "reject", "r1", "--feedback", "handle empty input")
    assert (code, out) == (0, "run r1 rejected; now loop3, round 3/10\n")
    assert fake.runs["r1"].feedback == "handle empty input"
    code, out, _ = run(fake, "loop", "extend", "r1", "--max-loop2", "12")
    assert (code, out) == (0, "run r1 extended to 12 rounds; now loop3, round 3/12\n")
    code, _, err = run(fake, "loop", "extend", "r1", "--max-loop2", "5")
    assert code == 1
    assert "error[invalid_args]: max_loop2 must exceed 12" in err
    code, _, err = run(fake, "loop", "approve", "r1")
    assert code == 1
    assert "error[conflict]: run r1 is loop3, not escalated" in err
    fake.runs["r1"].status = "escalated"
    code, out, _ = run(fake, "loop", "approve", "r1", "--reason", "good enough")
    assert (code, out) == (0, "run r1 approved; now done (PROCEED)\n")
    assert fake.runs["r1"].outcome_reason == "good enough"
    started(fake)
    code, out, _ = run(fake, "--json", "loop", "cancel", "r2", "--reason", "wrong task")
    assert (code, json.loads(out)["status"]) == (0, "cancelled")
    code, out, _ = run(fake, "loop", "cancel", "r2")
    assert (code, out) == (0, "run r2 cancelled; now cancelled\n")
    assert fake.sent("loop.reject") == [{"run": "r1", "feedback": "handle empty input"}]
    assert fake.sent("loop.extend") == [
        {"run": "r1", "max_loop2": 12},
        {"run": "r1", "max_loop2": 5},
    ]
    assert fake.sent("loop.approve") == [{"run": "r1"}, {"run": "r1", "reason": "good enough"}]
    assert fake.sent("loop.cancel") == [{"run": "r2", "reason": "wrong task"}, {"run": "r2"}]
    code, _, _ = run(fake, "--swarm", "s1", "loop", "approve", "r2")
    assert fake.sent("loop.approve")[-1] == {"swarm": "s1", "run": "r2"}


# --------------------------------------------------------------------------- no daemon


@pytest.mark.parametrize(
    "args",
    [
        ["loop", "x"], ["loop", "x", "--follow"], ["cfn-loop", "x"], ["loop", "status", "r1"],
        ["loop", "list"], ["loop", "follow", "r1"], ["loop", "approve", "r1"],
        ["loop", "reject", "r1"], ["loop", "extend", "r1", "--max-loop2", "3"],
        ["loop", "cancel", "r1"], ["loop", "backlog", "r1"],
    ],
)  # fmt: skip
def test_every_loop_command_reports_unreachable(sock_dir: Path, args: list[str]) -> None:
    result = CliRunner().invoke(cfnctl, ["--socket", str(sock_dir / "none.sock"), *args])
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    assert "systemctl start cfnd" in result.stderr


def test_loop_commands_import_nothing_daemon_side() -> None:
    probe = (
        "import contextlib, io, sys\n"
        "from cfn_client.cli.main import main\n"
        "for argv in (['loop', 'x', '--follow'], ['loop', 'status', 'r1'], ['cfn-loop', 'x']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), "
        "contextlib.redirect_stderr(io.StringIO()):\n"
        "        try:\n"
        "            main(['--socket', sys.argv[1], *argv])\n"
        "        except SystemExit:\n"
        "            pass\n"
        "bad = ('cfn_daemon', 'redis', 'structlog', 'anyio', 'uvloop')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(bad)))\n"
    )
    with tempfile.TemporaryDirectory(prefix="cfnl-") as tmp:
        proc = subprocess.run(
            [sys.executable, "-c", probe, str(Path(tmp) / "none.sock")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --------------------------------------------------------------------------- API


def test_client_loop_methods(fake: LoopFake) -> None:
    with Client(fake.path) as cfn:
        info = cfn.loop_start("t", validators=("reviewer",), max_loop3=2)
        assert isinstance(info, RunInfo)
        assert (info.validators, info.implementers, info.max_loop3) == (
            ["reviewer"],
            ["coder", "coder"],
            2,
        )
        with cfn.loop_follow(info.id) as events:
            got = list(events)
        assert events.done
        assert [type(e) for e in got] == [Event] * len(SCRIPT)
        assert got[2].data["confidence"] == 0.82
        done = cfn.loop_status(info.id)  # the same connection, after the stream ended
        assert (done.status, done.decision) == ("done", "PROCEED")
        assert [r.id for r in cfn.loop_list(status="done").runs] == ["r1"]
        assert cfn.loop_backlog(info.id) == LoopBacklogResult(run="r1", items=[])
        with pytest.raises(Conflict):
            cfn.loop_approve(info.id)
        assert cfn.loop_cancel(info.id, "stop").status == "cancelled"
        with pytest.raises(InvalidArgs, match="max_loop2"):
            cfn.loop_extend(info.id, "many")  # type: ignore[arg-type]
    assert fake.sent("loop.start") == [{"task": "t", "validators": ["reviewer"], "max_loop3": 2}]
    assert fake.sent("loop.follow") == [{"run": "r1"}]


async def test_async_client_loop_methods(fake: LoopFake) -> None:
    fake.ending = dict(ENDINGS["escalated"])
    async with AsyncClient(fake.path) as cfn:
        info = await cfn.loop_start("t", implementers=["coder"], owner="po", phase="p")
        async with cfn.loop_follow(info.id, swarm="s1") as events:
            got = [e async for e in events]
        assert [e.type for e in got] == [t for t, _ in SCRIPT]
        assert (await cfn.loop_status(info.id)).status == "escalated"
        assert (await cfn.loop_reject(info.id, "again")).status == "loop3"
        assert (await cfn.loop_extend(info.id, 20)).max_loop2 == 20
        fake.runs[info.id].status = "escalated"
        assert (await cfn.loop_approve(info.id, "ok")).decision == "PROCEED"
        assert (await cfn.loop_list()).runs[0].id == info.id
        assert (await cfn.loop_backlog(info.id)).items == []
        assert (await cfn.loop_cancel(info.id)).status == "cancelled"
    assert fake.sent("loop.start") == [
        {"task": "t", "phase": "p", "implementers": ["coder"], "owner": "po"}
    ]
    assert fake.sent("loop.follow") == [{"swarm": "s1", "run": "r1"}]


def test_loop_methods_match_their_schemas() -> None:
    # The methods' parameter names are the schemas' fields: a rename on either side fails.
    from cfn_client.wire.ops import OPS

    for op, spec in OPS.items():
        if not op.startswith("loop."):
            continue
        fields = {f.encode_name for f in msgspec.structs.fields(spec.args)}
        for cls in (Client, AsyncClient):
            method = getattr(cls, op.replace(".", "_"))
            code = method.__code__
            params = set(code.co_varnames[1 : code.co_argcount + code.co_kwonlyargcount])
            assert params == fields, (cls.__name__, op, params ^ fields)


# --------------------------------------------------------------------------- render


def test_run_exit_code() -> None:
    def exit_of(status: str, decision: str | None = None) -> int:
        return loop_cmd.run_exit_code(
            RunInfo(id="r", swarm="s", task="t", status=status, decision=decision)
        )

    assert exit_of("done", "PROCEED") == exit_of("done", "DEFER") == 0
    assert exit_of("escalated", "ESCALATE") == exit_of("escalated") == 5
    assert exit_of("failed") == exit_of("cancelled") == 6
    assert exit_of("loop2") == exit_of("done") == 1


def test_follow_view_without_limits_or_positions() -> None:
    view = render_loop.FollowView()
    e = Event(id="1-0", ts_ms=0, swarm="s", type="loop.vote", data={"validator": "v"})
    where = "loop2 round 0".ljust(render_loop.WHERE_WIDTH)
    assert view.line(e) == f"-  {where}  v REJECTS, confidence -"
    e = Event(id="1-0", ts_ms=0, swarm="s", type="loop.gate",
              data={"round": 2, "iteration": 3, "passed": True, "mean": 1, "low": 0.5})  # fmt: skip
    where = "loop3 round 2 iter 3".ljust(render_loop.WHERE_WIDTH)
    assert view.line(e).endswith(f"{where}  gate passed: lowest 0.50, mean 1")
    e = Event(id="1-0", ts_ms=0, swarm="s", type="loop.round",
              data={"status": "no_quorum", "score": None, "threshold": 0.9,
                    "reason": "2/4 votes, quorum 3"})  # fmt: skip
    assert view.line(e).endswith("round no_quorum: score - (threshold 0.90), approvals -, "
                                 "faulty -, suspects -; 2/4 votes, quorum 3")  # fmt: skip
    e = Event(id="1-0", ts_ms=0, swarm="s", type="loop.escalated", data={})
    assert view.line(e).endswith("  ESCALATED: no reason given")
