"""cfnctl before any daemon is involved: usage errors, help, argument parsing, exit codes
when cfnd is unreachable, and pure rendering of schema Structs. No daemon runs here.

A usage error must be caught before cfnctl connects: each of those commands is run
against a socket path that does not exist, so exit 2 (not 3) proves nothing was sent.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import click
import msgspec
import pytest

from cfn_client.api import AsyncClient, Client, wait_request_timeout
from cfn_client.cli import render
from cfn_client.cli.commands import loop as loop_cmd
from cfn_client.cli.env import Duration, Since, parse_duration
from cfn_client.cli.render import loop as render_loop
from cfn_client.wire.errors import EXIT_UNREACHABLE
from cfn_client.wire.schema.loop import RunInfo
from cfn_client.wire.schema.swarm import Event
from tests.cli_support import run


@pytest.fixture
def nowhere() -> Iterator[Path]:
    """A socket path nothing listens on."""
    with tempfile.TemporaryDirectory(prefix="cfnu-") as tmp:
        yield Path(tmp) / "none.sock"


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["swarm", "init", "meshh", "8"], "'meshh' is not one of 'mesh', 'hierarchical', 'ring'"),
        (["swarm", "init", "mesh", "51"], "a swarm has 2 to 50 agents, not 51"),
        (["swarm", "init", "ring", "1"], "a swarm has 2 to 50 agents, not 1"),
        (["swarm", "init", "ring", "many"], "'many' is not a valid integer"),
        (["swarm", "init", "ring", "4", "--strategy", "fast"], "'fast' is not one of"),
        (["swarm", "scale", "-1"], "No such option '-1'"),
        (["swarm", "reset"], "confirm with --force"),
        (["agent", "create", "shell", "--role", "boss"], "'boss' is not one of"),
        (["agent", "create", "shell", "--count", "0"], "0 is not in the range x>=1"),
        (["agent", "list", "--status", "sleepy"], "'sleepy' is not one of"),
        (["agent", "send", "a1", "a2"], "Missing argument 'MESSAGE'"),
        (["run", "x", "--timeout", "5"], "--timeout is how long --wait waits; add --wait"),
        (["run", "x", "--priority", "urgent"], "'urgent' is not one of"),
        (["run", "x", "--wait", "--timeout", "soon"], "'soon' is not a duration"),
        (["run", "x", "--max-attempts", "0"], "0 is not in the range x>=1"),
        (["run"], 'give the task as "TASK" or with --file'),
        (["task", "list", "--status", "bogus"], "'bogus' is not one of"),
        (["task", "wait"], "give task IDs or --all (not both)"),
        (["task", "wait", "t4", "--all"], "give task IDs or --all (not both)"),
        (["task", "clean", "--older-than", "-5"], "'-5' is not a duration"),
        (["events", "--since", "yesterday-ish"], "is neither a duration ago"),
        (["monitor", "--interval", "0"], "--interval"),
        (["monitor", "--interval", "50ms"], "--interval"),
        (["monitor", "--interval", "soon"], "--interval"),
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
        (["config", "reset"], "--yes"),
        (["dlq", "requeue"], "needs --yes"),
    ],
)
def test_usage_errors_exit_2_before_connecting(
    nowhere: Path, args: list[str], message: str
) -> None:
    code, out, err = run(nowhere, *args)
    assert code == 2, out + err
    assert message in out + err
    code, out, _ = run(nowhere, "--json", *args)
    doc = json.loads(out)
    assert (code, doc["ok"], doc["error"]["code"]) == (2, False, "usage_error")


@pytest.mark.parametrize(
    "args",
    [
        ["status"], ["ping"], ["doctor"], ["config", "show"],
        ["swarm", "init", "mesh", "4"], ["swarm", "list"], ["swarm", "status"],
        ["swarm", "scale", "3"], ["swarm", "destroy"], ["swarm", "reset", "--force"],
        ["swarm", "broadcast", "hi"], ["agent", "create", "shell"], ["agent", "list"],
        ["agent", "status", "a1"], ["agent", "terminate", "a1"], ["agent", "restart", "a1"],
        ["agent", "reset", "a1"], ["agent", "send", "a1", "a2", "hi"], ["run", "x"],
        ["run", "x", "--wait"], ["task", "list"], ["task", "status", "t1"],
        ["task", "cancel", "t1"], ["task", "wait", "--all"], ["task", "retry", "t1"],
        ["task", "clean"], ["dlq", "list"], ["dlq", "requeue", "--yes"], ["events"],
        ["events", "--follow"], ["monitor"], ["--json", "monitor", "--once"],
        ["loop", "x"], ["loop", "x", "--follow"], ["cfn-loop", "x"], ["loop", "status", "r1"],
        ["loop", "list"], ["loop", "follow", "r1"], ["loop", "approve", "r1"],
        ["loop", "reject", "r1"], ["loop", "extend", "r1", "--max-loop2", "3"],
        ["loop", "cancel", "r1"], ["loop", "backlog", "r1"],
    ],
)  # fmt: skip
def test_every_command_reports_unreachable(nowhere: Path, args: list[str]) -> None:
    code, out, err = run(nowhere, *args)
    assert code == EXIT_UNREACHABLE, out + err
    assert "systemctl start cfnd" in out + err


def test_help_texts(nowhere: Path) -> None:
    code, out, _ = run(nowhere, "loop", "--help")
    assert code == 0
    assert 'Usage: cfnctl loop "TASK" [OPTIONS] | COMMAND [ARGS]...' in out
    assert "cfnctl loop -- status" in out
    for name in ("start", "status", "list", "follow", "approve", "reject", "extend", "backlog",
                 "cancel"):  # fmt: skip
        assert f"\n  {name} " in out
    assert "5    ESCALATED" in out
    code, out, _ = run(nowhere, "loop", "a task", "--help")
    assert (code, out.splitlines()[0]) == (0, 'Usage: cfnctl loop start [OPTIONS] "TASK"')
    code, out, _ = run(nowhere, "cfn-loop", "-h")
    assert (code, out.splitlines()[0]) == (0, 'Usage: cfnctl cfn-loop [OPTIONS] "TASK"')
    code, out, _ = run(nowhere, "--help")
    assert "5  `loop` (followed): the run escalated" in out
    assert "6  `loop` (followed): the run failed or was cancelled" in out


def test_commands_import_nothing_daemon_side() -> None:
    probe = (
        "import contextlib, io, sys\n"
        "from cfn_client.cli.main import main\n"
        "for argv in (['loop', 'x', '--follow'], ['loop', 'status', 'r1'], ['cfn-loop', 'x'],\n"
        "             ['run', 'x', '--wait'], ['monitor'], ['events', '--follow']):\n"
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


# --------------------------------------------------------------------------- API shape


def test_client_methods_match_their_schemas() -> None:
    # The methods' parameter names are the schemas' fields: a rename on either side fails.
    # Client-only knobs (how the client itself retries) are the named exceptions.
    from cfn_client.wire.ops import OPS

    client_only = {"task.submit": {"retries"}, "task.submit_many": {"retries"}}

    for op, spec in OPS.items():
        if not op.startswith(("swarm.", "agent.", "task.", "dlq.", "events.", "loop.")):
            continue
        fields = {f.encode_name for f in msgspec.structs.fields(spec.args)}
        for cls in (Client, AsyncClient):
            method = getattr(cls, op.replace(".", "_"))
            code = method.__code__
            params = set(code.co_varnames[1 : code.co_argcount + code.co_kwonlyargcount])
            params -= client_only.get(op, set())
            assert params <= fields, (cls.__name__, op, params - fields)
            if op.startswith("loop."):
                assert params == fields, (cls.__name__, op, params ^ fields)


def test_wait_request_timeout_covers_the_wait() -> None:
    assert wait_request_timeout(None, 10) == math.inf
    assert wait_request_timeout(30, 10) == 40
    assert wait_request_timeout(30, 0.1) == 35  # never less than the margin


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25),
     ("2d", 172800.0), ("1.5h", 5400.0)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "1h-2m", "inf", "nan", "-3", "5 m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(click.BadParameter):
        Duration().convert(text, None, None)
    assert parse_duration(text) is None


def test_since_forms() -> None:
    now = time.time() * 1000
    assert abs(Since().convert("1h", None, None) - (now - 3_600_000)) < 5_000
    assert Since().convert("1700000000000", None, None) == 1_700_000_000_000
    iso = Since().convert("2024-05-01T14:00", None, None)
    assert time.localtime(iso / 1000)[:5] == (2024, 5, 1, 14, 0)


# --------------------------------------------------------------------------- rendering


def test_render_helpers() -> None:
    assert render.shorten("a  b\nc") == "a b c"
    assert render.shorten("x" * 60, 10) == "xxxxxxx..."
    assert render.format_counts({"a": 0, "b": 2}) == "b 2"
    assert render.format_counts({}) == "none"
    assert render.format_age(None) == "-"
    assert render.format_age(1000, now=91_000) == "1m ago"
    assert render.format_time(0) == "-"


def test_event_lines_cut_long_values() -> None:
    e = Event(id="1-0", ts_ms=0, swarm="s", type="task.failed",
              data={"task": "t1", "error": "x" * 100})  # fmt: skip
    line = render.event_line(e)
    assert "task.failed" in line
    assert "task=t1 error=xxx" in line
    assert line.endswith("...")
    assert len(line) < 100


def test_run_exit_code() -> None:
    def exit_of(status: str, decision: str | None = None) -> int:
        return loop_cmd.run_exit_code(
            RunInfo(id="r", swarm="s", task="t", status=status, decision=decision)
        )

    assert exit_of("done", "PROCEED") == exit_of("done", "DEFER") == 0
    assert exit_of("escalated", "ESCALATE") == exit_of("escalated") == 5
    assert exit_of("failed") == exit_of("cancelled") == 6
    assert exit_of("loop2") == exit_of("done") == 1  # a stream that ended early


def test_follow_view_lines() -> None:
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
    # Types the view does not know are shown generically, with their data.
    e = Event(id="1-0", ts_ms=0, swarm="s", type="loop.weird", data={"x": 1, "round": 2})
    assert view.line(e).endswith("  loop.weird  x=1 round=2")
    e = Event(id="1-0", ts_ms=0, swarm="s", type="loop.human",
              data={"round": 2, "iteration": 1, "outcome": "approved"})  # fmt: skip
    assert "  human  " in view.line(e) and view.line(e).endswith("  approved")
