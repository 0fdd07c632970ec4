"""``cfnctl monitor``: the pure screens, one-shot output, and the live view under a real pty.

The live tests run ``cfnctl monitor`` as a process whose stdin, stdout and stderr
are a pseudo-terminal (its controlling terminal, so Ctrl-C typed into it is a
SIGINT) against the threaded fake cfnd of test_cli_swarm_fake. Every wait is a
``select`` bounded by a deadline; the process's exit is watched through a pidfd.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cfn_client.cli.commands.monitor import ENTER_SCREEN, LEAVE_SCREEN
from cfn_client.cli.main import cfnctl
from cfn_client.cli.render import monitor as view
from cfn_client.wire.errors import EXIT_UNREACHABLE
from cfn_client.wire.schema.swarm import AgentInfo, SwarmInfo, SwarmStatusResult, TaskInfo
from tests.test_cli_swarm_fake import SwarmFake, fake, run, sock_dir, swarm

__all__ = ["fake", "sock_dir", "swarm"]  # fixtures, imported for pytest

CFNCTL = str(Path(sys.executable).parent / "cfnctl")
ENTER = ENTER_SCREEN.encode()
LEAVE = LEAVE_SCREEN.encode()
FRAME = b"\x1b[1;1H\x1b[2K"  # how every frame starts
CSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


# --------------------------------------------------------------------------- pure view


def info(sid: str = "s1", **kw: Any) -> SwarmInfo:
    base: dict[str, Any] = {
        "id": sid, "name": sid, "topology": "mesh", "strategy": "balanced", "max_agents": 8,
        "status": "active", "created_ms": 1, "agents": 2,
    }  # fmt: skip
    return SwarmInfo(**{**base, **kw})


def agent(aid: str, **kw: Any) -> AgentInfo:
    base: dict[str, Any] = {
        "id": aid, "swarm": "s1", "type": "shell", "role": "implementer", "status": "idle",
        "heartbeat_age_ms": 1500,
    }  # fmt: skip
    return AgentInfo(**{**base, **kw})


def status(
    sid: str = "s1", *, tasks: dict[str, int] | None = None, agents: list[AgentInfo] | None = None
) -> SwarmStatusResult:
    return SwarmStatusResult(
        swarm=info(sid), agents=agents if agents is not None else [],
        queues={"high": 1, "normal": 2, "low": 0, "retrying": 3}, tasks=tasks or {},
    )  # fmt: skip


def snap(*swarms: SwarmStatusResult, at_s: float = 0.0) -> view.Snapshot:
    return view.Snapshot(swarms=swarms, at_s=at_s, wall_ms=1_700_000_000_000)


def test_throughput_is_finished_tasks_per_second_between_snapshots() -> None:
    before = snap(status("s1", tasks={"succeeded": 3, "failed": 1, "running": 2}), at_s=10.0)
    after = snap(
        status("s1", tasks={"succeeded": 7, "failed": 2, "running": 9}),  # +5 finished
        status("s2", tasks={"succeeded": 4}),  # new: no earlier sample
        at_s=12.0,
    )
    assert view.finished(after.swarms[0]) == 9
    assert view.throughput(before, after) == {"s1": 2.5, "s2": None}
    assert view.throughput(None, after) == {"s1": None, "s2": None}
    assert view.throughput(after, after) == {"s1": None, "s2": None}  # no time elapsed
    cleaned = snap(status("s1", tasks={"succeeded": 1}), at_s=13.0)  # `task clean` ran
    assert view.throughput(after, cleaned) == {"s1": None}
    idle = snap(*after.swarms, at_s=14.0)
    assert view.throughput(after, idle) == {"s1": 0.0, "s2": 0.0}
    assert [view.format_rate(r) for r in (None, 0.0, 2.5, 12.34)] == [
        "-", "0.00/s", "2.50/s", "12.3/s",
    ]  # fmt: skip


def test_screen_shows_each_swarm_queues_tasks_throughput_and_agents() -> None:
    agents = [agent("a2", status="busy", current_task="t9", tasks_done=4, tasks_failed=1),
              agent("a3", role="validator")]  # fmt: skip
    current = snap(status("s1", tasks={"succeeded": 7, "queued": 2, "odd": 1}, agents=agents),
                   status("s2"))  # fmt: skip
    lines = view.screen(current, {"s1": 2.5}, interval_s=0.5)
    assert lines[0].startswith("cfnctl monitor  2 swarms  ")
    assert lines[0].endswith("every 0.5s  (q or Ctrl-C to quit)")
    assert lines[1:7] == [
        "",
        "swarm s1  mesh/balanced  agents 2/8  active  throughput 2.50/s",
        "  queues  high 1  normal 2  low 0  retrying 3",
        "  tasks   queued 2  assigned 0  running 0  retrying 0  odd 1",
        "  ended   succeeded 7  failed 0  cancelled 0",
        "  ID  TYPE   ROLE         STATUS  TASK  HEARTBEAT  DONE/FAILED",
    ]
    assert lines[7].split() == ["a2", "shell", "implementer", "busy", "t9", "1.5s", "4/1"]
    assert lines[8].split() == ["a3", "shell", "validator", "idle", "-", "1.5s", "0/0"]
    assert lines[10].endswith("throughput -")  # s2: no rate known
    assert lines[-1] == "  no agents"
    assert max(map(len, lines)) <= 80  # a usual terminal holds it all
    # One-shot: no quit hint.
    assert not view.screen(current)[0].endswith("to quit)")


def test_screen_without_swarms_and_with_a_missing_one() -> None:
    assert view.screen(snap())[1:] == ["", view.NO_SWARMS]
    gone = view.Snapshot(swarms=(), at_s=0, wall_ms=1, missing=("web",))
    assert view.screen(gone)[1:] == ["", "swarm web: not found (destroyed?)"]


def test_fit_cuts_to_a_small_terminal() -> None:
    agents = [agent(f"a{i}") for i in range(10)]
    lines = view.screen(snap(status("s1", agents=agents)), interval_s=1)
    assert len(lines) > 8
    assert max(map(len, lines)) > 30
    fitted = view.fit(lines, width=30, height=8)
    assert len(fitted) == 8
    assert all(len(line) <= 30 for line in fitted)
    assert fitted[:7] == [line[:30] for line in lines[:7]]
    more = f"... {len(lines) - 7} more lines (enlarge the terminal, or pick one with --swarm)"
    assert fitted[-1] == more[:30]
    assert view.fit(lines, None, None) == lines
    assert view.fit(lines, 30, 100) == [line[:30] for line in lines]
    assert view.fit(lines, 0, 1) == ["."]  # degenerate sizes still give a line
    assert view.fit(["ab"], None, 1) == ["ab"]


# --------------------------------------------------------------------------- one snapshot


def test_without_a_terminal_prints_one_snapshot(swarm: SwarmFake) -> None:
    code, out, err = run(swarm, "monitor")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("cfnctl monitor  1 swarm  ")
    assert lines[2] == "swarm s1  mesh/balanced  agents 2/8  active  throughput -"
    assert [line.split()[0] for line in lines[7:]] == ["a2", "a3"]
    assert swarm.sent("swarm.list") == [{}]
    assert swarm.sent("swarm.status") == [{"swarm": "s1"}]
    code, out2, _ = run(swarm, "monitor", "--once", "--interval", "500ms")
    assert code == 0
    assert out2.splitlines()[1:] == lines[1:]


def test_json_prints_one_document_of_every_status(swarm: SwarmFake) -> None:
    run(swarm, "swarm", "init", "ring", "4")
    run(swarm, "run", "echo hi")  # ambiguous without --swarm: fails, submits nothing
    run(swarm, "--swarm", "s1", "run", "echo hi")
    code, out, err = run(swarm, "--json", "monitor")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert [s["swarm"]["id"] for s in doc["swarms"]] == ["s1", "s4"]
    assert doc["swarms"][0]["queues"]["normal"] == 1
    assert [a["id"] for a in doc["swarms"][0]["agents"]] == ["a2", "a3"]
    assert doc["swarms"][1]["agents"] == []


def test_swarm_option_watches_only_that_swarm(swarm: SwarmFake) -> None:
    run(swarm, "swarm", "init", "ring", "4")
    swarm.received.clear()
    code, out, _ = run(swarm, "--swarm", "s4", "monitor", "--once")
    assert code == 0
    assert "swarm s4  ring/balanced  agents 0/4" in out
    assert "swarm s1" not in out
    assert swarm.sent("swarm.list") == []
    assert swarm.sent("swarm.status") == [{"swarm": "s4"}]
    code, _, err = run(swarm, "--swarm", "nope", "monitor")
    assert (code, "error[not_found]: no swarm 'nope'" in err) == (1, True)


def test_no_swarms_and_usage_errors(fake: SwarmFake) -> None:
    code, out, _ = run(fake, "monitor")
    assert (code, out.splitlines()[1:]) == (0, ["", view.NO_SWARMS])
    code, out, _ = run(fake, "--json", "monitor")
    assert json.loads(out) == {"swarms": []}
    for bad in ("0", "50ms", "soon"):
        code, _, _ = run(fake, "monitor", "--interval", bad)
        assert code == 2, bad


def test_unreachable_daemon_exits_3(sock_dir: Path) -> None:
    for args in (["monitor"], ["--json", "monitor", "--once"]):
        result = CliRunner().invoke(cfnctl, ["--socket", str(sock_dir / "none.sock"), *args])
        assert result.exit_code == EXIT_UNREACHABLE, result.output
        assert "systemctl start cfnd" in result.stdout + result.stderr


def test_scripts_never_hang_on_a_pipe(swarm: SwarmFake) -> None:
    # A real process, stdout a pipe, stdin not a terminal: one snapshot, at once.
    proc = subprocess.run(
        [CFNCTL, "--socket", str(swarm.path), "monitor", "--interval", "60"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert b"swarm s1" in proc.stdout
    assert b"\x1b" not in proc.stdout  # no terminal control on a pipe


# --------------------------------------------------------------------------- live, under a pty

# Run cfnctl with the pty (its stdout) as controlling terminal: then Ctrl-C, Ctrl-Z and
# window size changes reach it as signals, as in a shell (start_new_session=True: setsid).
CTTY_EXEC = (
    "import fcntl, os, sys, termios; fcntl.ioctl(1, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class PtyMonitor:
    """``cfnctl monitor`` on a pseudo-terminal; ``output`` is everything it wrote."""

    def __init__(
        self, socket: Path, *args: str, rows: int = 30, cols: int = 100, stdin_tty: bool = True
    ) -> None:
        self.master, self.slave = os.openpty()
        self.resize(rows, cols)
        self.mode_before = termios.tcgetattr(self.slave)
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "CFN_SWARM")}
        env["TERM"] = "xterm-256color"
        argv = [CFNCTL, "--socket", str(socket), "monitor", *args]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CTTY_EXEC, *argv],
            stdin=self.slave if stdin_tty else subprocess.DEVNULL, stdout=self.slave,
            stderr=self.slave, start_new_session=True, env=env,
        )  # fmt: skip
        self.pidfd = os.pidfd_open(self.proc.pid)
        self.output = b""

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def _pump(self, timeout: float) -> bool:
        """Read what is there within ``timeout``; True once the process has exited."""
        ready, _, _ = select.select([self.master, self.pidfd], [], [], max(timeout, 0))
        if self.master in ready:
            with contextlib.suppress(OSError):
                self.output += os.read(self.master, 65536)
        return self.pidfd in ready

    def read_until(self, pattern: bytes, start: int = 0, timeout: float = 10.0) -> int:
        """Wait until ``pattern`` (a regex) shows after ``start``; its end offset."""
        deadline = time.monotonic() + timeout
        while (found := re.compile(pattern, re.DOTALL).search(self.output, start)) is None:
            left = deadline - time.monotonic()
            if left <= 0 or self._pump(left):
                self._pump(0)
                if (found := re.compile(pattern, re.DOTALL).search(self.output, start)) is not None:
                    break
                raise AssertionError(f"no {pattern!r} in time; output: {self.output[-3000:]!r}")
        return found.end()

    def finish(self, timeout: float = 10.0) -> int:
        """Wait for the exit (bounded), read the rest, return the exit code."""
        deadline = time.monotonic() + timeout
        while not self._pump(deadline - time.monotonic()):
            if time.monotonic() >= deadline:
                raise AssertionError(f"cfnctl monitor still running; output: {self.output!r}")
        code = self.proc.wait(timeout=5)
        while select.select([self.master], [], [], 0)[0]:
            chunk = os.read(self.master, 65536)
            if not chunk:
                break
            self.output += chunk
        return code

    def frames(self, start: int = 0) -> int:
        return self.output.count(FRAME, start)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self.pidfd, self.master, self.slave):
            os.close(fd)

    def assert_restored(self) -> None:
        """The terminal is as it was: main screen, cursor shown, the same tty modes."""
        assert self.output.count(ENTER) >= 1
        assert self.output.rfind(LEAVE) > self.output.rfind(ENTER)
        assert termios.tcgetattr(self.slave) == self.mode_before


@contextlib.contextmanager
def pty_monitor(socket: Path, *args: str, **kw: Any) -> Iterator[PtyMonitor]:
    mon = PtyMonitor(socket, *args, **kw)
    try:
        yield mon
    finally:
        mon.close()


def add_finished_tasks(fake: SwarmFake, n: int) -> None:
    with fake._model:
        for i in range(n):
            tid = f"done{i}"
            fake.tasks[tid] = TaskInfo(
                id=tid, swarm="s1", text="echo", type="shell", priority="normal",
                status="succeeded",
            )  # fmt: skip


def test_live_screen_refreshes_and_q_quits_restoring_the_terminal(swarm: SwarmFake) -> None:
    with pty_monitor(swarm.path, "--interval", "0.2") as mon:
        shown = mon.read_until(rb"swarm s1  mesh/balanced  agents 2/8")
        assert ENTER in mon.output[:shown]
        assert termios.tcgetattr(mon.slave)[3] & termios.ICANON == 0  # cbreak while live
        # Tasks finish between two refreshes: the next frame shows them and a throughput.
        add_finished_tasks(swarm, 5)
        end = mon.read_until(rb"succeeded 5", start=shown)
        frame = mon.output[mon.output.rfind(FRAME, 0, end) : end]
        rate = re.findall(rb"throughput (\d+\.\d+)/s", frame)
        assert rate, frame
        assert float(rate[-1]) > 0
        mon.send(b"q")
        start = time.monotonic()
        assert mon.finish() == 0
        assert time.monotonic() - start < 5
        assert mon.output.endswith(LEAVE), mon.output[-200:]
        mon.assert_restored()
    # One connection for the whole run; one list and one status per refresh.
    assert len(swarm.sent("hello")) == 1
    assert len(swarm.sent("swarm.status")) == len(swarm.sent("swarm.list")) >= 2


@pytest.mark.parametrize("how", ["ctrl-c key", "SIGINT"])
def test_ctrl_c_exits_0_restoring_the_terminal(swarm: SwarmFake, how: str) -> None:
    with pty_monitor(swarm.path, "--interval", "0.2") as mon:
        mon.read_until(rb"swarm s1")
        if how == "SIGINT":
            mon.proc.send_signal(signal.SIGINT)
        else:
            mon.send(b"\x03")  # the terminal turns it into SIGINT (cbreak keeps ISIG)
        assert mon.finish() == 0
        assert mon.output.endswith(LEAVE), mon.output[-200:]
        mon.assert_restored()


def test_sigterm_exits_143_restoring_the_terminal(swarm: SwarmFake) -> None:
    with pty_monitor(swarm.path, "--interval", "0.2") as mon:
        mon.read_until(rb"swarm s1")
        mon.proc.send_signal(signal.SIGTERM)
        assert mon.finish() == 128 + signal.SIGTERM
        mon.assert_restored()


def test_daemon_stopping_mid_monitor_exits_3(sock_dir: Path) -> None:
    fake = SwarmFake(sock_dir / "m.sock").__enter__()
    try:
        assert run(fake, "swarm", "init", "mesh", "4")[0] == 0
        with pty_monitor(fake.path, "--interval", "0.2") as mon:
            mon.read_until(rb"swarm s1")
            fake.__exit__(None, None, None)
            assert mon.finish() == EXIT_UNREACHABLE
            out = mon.output
            assert out.find(b"error[daemon_unreachable]") > out.rfind(LEAVE) > out.rfind(ENTER)
            assert b"systemctl start cfnd" in out or b"cfnctl status" in out
            mon.assert_restored()
    finally:
        fake.__exit__(None, None, None)


def test_resize_redraws_at_once_and_ctrl_z_gives_the_terminal_back(swarm: SwarmFake) -> None:
    with pty_monitor(swarm.path, "--interval", "60") as mon:
        shown = mon.read_until(rb"swarm s1.*a3 ")
        first = mon.frames()
        # A long interval: only the resize (SIGWINCH) can cause the next frame.
        mon.resize(6, 40)
        end = mon.read_until(rb"more lines", start=shown)
        assert mon.frames() > first
        frame = mon.output[mon.output.rfind(FRAME, 0, end) :]
        rows = [CSI.sub(b"", part) for part in re.split(rb"\x1b\[\d+;1H\x1b\[2K", frame)[1:]]
        assert len(rows) == 6
        assert all(len(row) <= 40 for row in rows), rows
        # Ctrl-Z: the screen is left (a shell would stop the job here; this orphaned
        # test process group is not stopped), then taken back and redrawn.
        mark = len(mon.output)
        mon.send(b"\x1a")
        back = mon.read_until(re.escape(LEAVE) + rb".*" + re.escape(ENTER), start=mark)
        mon.read_until(re.escape(FRAME), start=back)
        mon.send(b"q")
        assert mon.finish(timeout=5) == 0  # at once, though the interval is 60s
        mon.assert_restored()


def test_stdin_not_a_terminal_still_runs_until_ctrl_c(swarm: SwarmFake) -> None:
    with pty_monitor(swarm.path, "--interval", "0.2", stdin_tty=False) as mon:
        start = mon.read_until(rb"swarm s1")
        mon.read_until(re.escape(FRAME), start=start)  # it keeps refreshing
        mon.proc.send_signal(signal.SIGINT)
        assert mon.finish() == 0
        assert mon.output.endswith(LEAVE)
        mon.assert_restored()
