"""Human output: tables fit the terminal, colour only for a person, relative times,
and progress of long operations on stderr's terminal only — stdout stays the result."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
from pathlib import Path

import pytest

from cfn_client.cli import render
from cfn_client.cli.progress import progress
from cfn_client.cli.render.common import ELLIPSIS, colour_enabled, fit_widths, terminal_width
from tests.cli_support import Swarm, swarm, wait_agents
from tests.daemon_proc import CFNCTL

__all__ = ["swarm"]  # fixture, imported for pytest

ESC = "\x1b["


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


# --------------------------------------------------------------------------- tables


ROWS = [["a1", "running", "x" * 70], ["a22", "failed", "short"]]


def test_a_table_fits_the_width_by_cutting_the_widest_column() -> None:
    text = render.table(["ID", "STATUS", "TEXT"], ROWS, width=40, colour=False)
    lines = text.splitlines()
    assert all(len(line) <= 40 for line in lines), lines
    assert lines[1].startswith("a1   running  xxx")
    assert lines[1].endswith(ELLIPSIS)  # the cut is marked
    assert lines[2].split() == ["a22", "failed", "short"]  # narrow columns are whole


def test_without_a_limit_nothing_is_cut() -> None:
    text = render.table(["ID", "STATUS", "TEXT"], ROWS, width=None, colour=False)
    assert "x" * 70 in text and ELLIPSIS not in text


def test_columns_are_cut_widest_first_and_never_below_their_floor() -> None:
    assert fit_widths([10, 50, 30], [6, 6, 6], 60) == [10, 23, 23]
    assert fit_widths([10, 20], [6, 6], 100) == [10, 20]
    # Too narrow for any column: every one at its floor, wider than asked.
    assert fit_widths([10, 50, 30], [8, 8, 8], 10) == [8, 8, 8]
    text = render.table(["IDENTIFIER", "V"], [["a" * 30, "b" * 30]], width=12, colour=False)
    assert text.splitlines()[0].startswith("IDENTIFIER")  # a header is never cut


def test_the_width_is_the_terminals_or_none_for_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert terminal_width(io.StringIO()) is None
    monkeypatch.setenv("COLUMNS", "57")
    assert terminal_width(io.StringIO()) == 57
    assert terminal_width(Terminal()) == 57
    lines = render.table(["ID", "STATUS", "TEXT"], ROWS, colour=False).splitlines()
    assert max(len(line) for line in lines) == 57


# --------------------------------------------------------------------------- colour


def test_colour_only_on_a_terminal_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert colour_enabled(Terminal())
    assert not colour_enabled(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour_enabled(Terminal())
    monkeypatch.setenv("NO_COLOR", "")  # empty means unset (no-color.org)
    assert colour_enabled(Terminal())
    coloured = render.table(["ID", "STATUS"], [["a1", "failed"]], width=None, colour=True)
    assert f"{ESC}31mfailed" in coloured and f"{ESC}1mID" in coloured
    plain = render.table(["ID", "STATUS"], [["a1", "failed"]], width=None, colour=False)
    assert ESC not in plain
    # Colour codes do not count as width: columns line up as without them.
    assert [len(line) for line in plain.splitlines()] == [
        len(line.replace(f"{ESC}31m", "").replace(f"{ESC}1m", "").replace(f"{ESC}0m", ""))
        for line in coloured.splitlines()
    ]


def test_the_one_style_helper_is_gated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert render.style("x", fg="red") == "x"
    assert render.style("x", fg="red", colour=True) != "x"


# --------------------------------------------------------------------------- times


@pytest.mark.parametrize(
    ("ago_ms", "text"),
    [(0, "0s ago"), (12_400, "12s ago"), (190_000, "3m ago"), (7_300_000, "2h ago"),
     (4 * 86_400_000 + 5, "4d ago")],
)  # fmt: skip
def test_relative_times(ago_ms: int, text: str) -> None:
    now = 1_700_000_000_000
    assert render.format_age(now - ago_ms, now=now) == text


def test_tables_say_ago_and_json_keeps_epoch_ms(swarm: Swarm) -> None:
    code, out, err = swarm.cli("swarm", "list")
    assert code == 0, err
    # (the current swarm's row starts with "*": see `swarm use`)
    row = next(line for line in out.splitlines() if line.lstrip("* ").startswith(swarm.name))
    assert row.endswith(("s ago", "m ago"))
    code, out, _ = swarm.cli("--json", "swarm", "list")
    mine = next(s for s in json.loads(out)["swarms"] if s["id"] == swarm.name)
    assert isinstance(mine["created_ms"], int)


# --------------------------------------------------------------------------- progress


def test_progress_is_a_live_line_on_a_terminal_only() -> None:
    term = Terminal()
    with progress("scaling", json_mode=False, stream=term) as line:
        line.update("scaling: 2 of 3")
    drawn = term.getvalue()
    assert drawn.startswith("\r\x1b[Kscaling (0s)")
    assert "\r\x1b[Kscaling: 2 of 3 (0s)" in drawn
    assert drawn.endswith("\r\x1b[K")  # erased at the end
    assert "\n" not in drawn
    for stream, json_mode in ((io.StringIO(), False), (Terminal(), True)):
        with progress("scaling", json_mode=json_mode, stream=stream) as line:
            line.update("more")
        assert stream.getvalue() == "", json_mode


def run_with_stderr_on_a_pty(*args: str) -> tuple[int, str, str]:
    """cfnctl ARGS with stdout a pipe and stderr a terminal: (exit code, stdout, stderr)."""
    return run_on_a_pty(*args, stream="stderr")


def run_on_a_pty(
    *args: str, stream: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """cfnctl ARGS with ``stream`` (stdout or stderr) a terminal and the other a pipe:
    (exit code, the pipe's text, what the terminal got)."""
    leader, follower = pty.openpty()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("CFN_", "NO_COLOR"))}
    full_env.update(env or {})
    where = {"stdout": follower, "stderr": subprocess.PIPE}
    if stream == "stderr":
        where = {"stdout": subprocess.PIPE, "stderr": follower}
    with subprocess.Popen([*CFNCTL, *args], text=True, env=full_env, **where) as proc:
        os.close(follower)
        piped, piped_err = proc.communicate(timeout=120)
    stdout = piped if stream == "stderr" else piped_err
    seen = b""
    for _ in range(10_000):  # until the pty is drained (EIO once the child's side closed)
        ready, _, _ = select.select([leader], [], [], 1)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    return proc.returncode, stdout, seen.decode(errors="replace")


def test_colour_reaches_a_terminal_but_not_a_pipe_nor_no_color(swarm: Swarm) -> None:
    args = ("--socket", str(swarm.socket), "--swarm", swarm.name, "swarm", "list")
    _, _, seen = run_on_a_pty(*args, stream="stdout")
    assert f"{ESC}1mID" in seen and f"{ESC}32mactive" in seen
    _, _, seen = run_on_a_pty(*args, stream="stdout", env={"NO_COLOR": "1"})
    assert swarm.name in seen and ESC not in seen
    code, out, _ = swarm.cli("swarm", "list")  # a pipe
    assert code == 0 and swarm.name in out and ESC not in out


def test_progress_never_reaches_stdout_and_json_stays_clean(swarm: Swarm, tmp_path: Path) -> None:
    sock = str(swarm.socket)
    # Human mode: the live line goes to the terminal on stderr, the result to stdout.
    code, out, err = run_with_stderr_on_a_pty(
        "--socket", sock, "--swarm", swarm.name, "swarm", "scale", "1"
    )
    assert code == 0, err
    assert f"scaling swarm {swarm.name} to 1 agents" in err
    assert out.startswith(f"swarm {swarm.name}: spawned 1") and "\r" not in out
    with swarm.client(timeout_s=60) as cfn:
        wait_agents(cfn, swarm.name, 1)
    # --json: one document on stdout, and no progress at all, even on a terminal.
    code, out, err = run_with_stderr_on_a_pty(
        "--socket", sock, "--swarm", swarm.name, "--json", "swarm", "scale", "0"
    )
    assert code == 0, err
    assert json.loads(out)["swarm"] == swarm.name
    assert "scaling" not in err
    epic = tmp_path / "epic.toml"
    epic.write_text(
        'name = "progress"\n[[phases]]\nname = "one"\nimplementers = ["impl"]\n'
        'validators = ["check"]\nowner = "po"\n'
    )
    for json_flag in ([], ["--json"]):
        code, out, err = run_with_stderr_on_a_pty(
            "--socket", sock, "--swarm", swarm.name, *json_flag, "epic", "start", str(epic)
        )
        assert code == 0, out + err
        if json_flag:
            assert json.loads(out)["status"] == "done"  # exactly one JSON document
            assert "phase one started" not in err
        else:
            assert "phase one started as run" in err
            assert "phase one started" not in out
            assert out.startswith("epic ") and "\r" not in out
    code, out, err = run_with_stderr_on_a_pty(
        "--socket", sock, "--swarm", swarm.name, "swarm", "destroy", "--force"
    )
    assert code == 0, err
    assert f"destroying swarm {swarm.name}" in err
    assert out.startswith(f"swarm {swarm.name} destroyed")


def test_every_table_goes_through_the_one_renderer(monkeypatch: pytest.MonkeyPatch) -> None:
    # metrics and team list had tables of their own: now they fit and colour alike.
    from cfn_client.cli.commands.observe import table as metrics_table
    from cfn_client.cli.commands.team import _show
    from cfn_client.wire.schema.observe import MetricsResult
    from cfn_client.wire.schema.team import TeamInfo, TeamRole

    monkeypatch.setenv("COLUMNS", "40")
    role = TeamRole(name="frontend-dev", description="React work " * 10, grants=["operator"],
                    agent_types=[])  # fmt: skip
    team = _show(TeamInfo(roles=[role], members={})).splitlines()
    assert team[0].split() == ["ROLE", "GRANTS", "AGENT", "POOL", "DESCRIPTION"]
    assert len(team[1]) == 40 and team[1].endswith(ELLIPSIS)
    assert metrics_table(MetricsResult(agents=[])).split() == [
        "SWARM", "AGENT", "RUNS", "SUCCESS", "MEAN_MS", "MIN_MS", "MAX_MS", "P95_MS", "TYPES",
    ]  # fmt: skip
