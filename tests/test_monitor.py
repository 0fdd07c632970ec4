"""``cfnctl monitor``: the pure screens, one-shot output, and the live view under a real pty.

The live tests run ``cfnctl monitor`` as a process whose stdin, stdout and stderr
are a pseudo-terminal (its controlling terminal, so Ctrl-C typed into it is a
SIGINT) against a real cfnd (one per module: the monitor shows every swarm, so this
module's tests must not see other modules' swarms). Each test makes its swarm and
removes it again. Every wait is a ``select`` bounded by a deadline; the process's
exit is watched through a pidfd.
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

from cfn_client.api import Client
from cfn_client.cli.commands.monitor import ENTER_SCREEN, LEAVE_SCREEN
from cfn_client.cli.render import monitor as view
from cfn_client.wire.errors import EXIT_UNREACHABLE
from cfn_client.wire.schema.swarm import AgentInfo, SwarmInfo, SwarmStatusResult
from tests.cli_support import Swarm, destroy, new_swarm_name, own_cfnd, run, wait_agents
from tests.daemon_proc import CfndProcess

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


@pytest.fixture(scope="module")
def monitored() -> Iterator[CfndProcess]:
    """This module's own cfnd: no swarm but the running test's."""
    with own_cfnd("cfnm-") as proc:
        yield proc


@pytest.fixture
def swarm(monitored: CfndProcess) -> Iterator[Swarm]:
    """A mesh swarm of up to 8 agents (none yet), the only one on ``monitored``."""
    name = new_swarm_name()
    with Client(monitored.socket, timeout_s=60) as cfn:
        cfn.swarm_init("mesh", 8, name=name)
    try:
        yield Swarm(monitored.socket, name)
    finally:
        destroy(monitored.socket, name)


def test_without_a_terminal_prints_one_snapshot(swarm: Swarm) -> None:
    code, _, err = swarm.cli("agent", "create", "shell", "--count", "2")
    assert code == 0, err
    with swarm.client(timeout_s=60) as cfn:
        agents = sorted(a.id for a in wait_agents(cfn, swarm.name, 2))
    code, out, err = run(swarm.socket, "monitor")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("cfnctl monitor  1 swarm  ")
    assert lines[2] == f"swarm {swarm.name}  mesh/balanced  agents 2/8  active  throughput -"
    assert lines[6].split() == ["ID", "TYPE", "ROLE", "STATUS", "TASK", "HEARTBEAT", "DONE/FAILED"]
    assert sorted(line.split()[0] for line in lines[7:]) == agents
    assert [line.split()[1:5] for line in lines[7:]] == [["shell", "implementer", "idle", "-"]] * 2
    code, out2, _ = run(swarm.socket, "monitor", "--once", "--interval", "500ms")
    assert code == 0
    assert out2.splitlines()[1:7] == lines[1:7]


def test_json_prints_one_document_of_every_status(swarm: Swarm) -> None:
    other = new_swarm_name()
    assert run(swarm.socket, "swarm", "init", "ring", "4", "--name", other)[0] == 0
    try:
        # Ambiguous (no current swarm recorded): submits nothing.
        code, _, err = run(swarm.socket, "run", "echo hi", env={"CFN_CONTEXT_FILE": "/nonexistent"})
        assert (code, "several swarms" in err) == (1, True)
        assert swarm.cli("run", "echo hi", "--wait")[0] == 0
        code, out, err = run(swarm.socket, "--json", "monitor")
        assert (code, err) == (0, "")
        doc = {s["swarm"]["id"]: s for s in json.loads(out)["swarms"]}
        assert set(doc) == {swarm.name, other}
        assert doc[swarm.name]["tasks"] == {"succeeded": 1}
        assert len(doc[swarm.name]["agents"]) == 1  # spawned on demand for the task
        assert (doc[other]["tasks"], doc[other]["agents"]) == ({}, [])
        assert doc[other]["swarm"]["topology"] == "ring"
    finally:
        destroy(swarm.socket, other)


def test_swarm_option_watches_only_that_swarm(swarm: Swarm) -> None:
    other = new_swarm_name()
    assert run(swarm.socket, "swarm", "init", "ring", "4", "--name", other)[0] == 0
    try:
        code, out, _ = run(swarm.socket, "--swarm", other, "monitor", "--once")
        assert code == 0
        assert f"swarm {other}  ring/balanced  agents 0/4" in out
        assert f"swarm {swarm.name}" not in out
        code, _, err = run(swarm.socket, "--swarm", "nope", "monitor")
        assert (code, "error[not_found]: no swarm 'nope'" in err) == (1, True)
    finally:
        destroy(swarm.socket, other)


def test_no_swarms(monitored: CfndProcess) -> None:
    code, out, _ = run(monitored.socket, "monitor")
    assert (code, out.splitlines()[1:]) == (0, ["", view.NO_SWARMS])
    code, out, _ = run(monitored.socket, "--json", "monitor")
    assert json.loads(out) == {"swarms": []}


def test_scripts_never_hang_on_a_pipe(swarm: Swarm) -> None:
    # A real process, stdout a pipe, stdin not a terminal: one snapshot, at once.
    proc = subprocess.run(
        [CFNCTL, "--socket", str(swarm.socket), "monitor", "--interval", "60"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"swarm {swarm.name}".encode() in proc.stdout
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


def test_live_screen_refreshes_and_q_quits_restoring_the_terminal(swarm: Swarm) -> None:
    shown_at = rf"swarm {swarm.name}  mesh/balanced  agents 0/8".encode()
    with pty_monitor(swarm.socket, "--interval", "0.2") as mon:
        shown = mon.read_until(shown_at)
        assert ENTER in mon.output[:shown]
        assert termios.tcgetattr(mon.slave)[3] & termios.ICANON == 0  # cbreak while live
        # Tasks finish between two refreshes: a later frame shows them and a throughput.
        with swarm.client(timeout_s=60) as cfn:
            ids = [cfn.task_submit("true", swarm=swarm.name).id for _ in range(5)]
            cfn.task_wait(ids, swarm=swarm.name, timeout_s=60)
        end = mon.read_until(rb"succeeded 5", start=shown)
        frame = mon.output[mon.output.rfind(FRAME, 0, end) : end]
        assert re.search(rb"throughput (\d+\.\d+|-)", frame), frame
        mon.send(b"q")
        start = time.monotonic()
        assert mon.finish() == 0
        assert time.monotonic() - start < 5
        assert mon.output.endswith(LEAVE), mon.output[-200:]
        mon.assert_restored()


@pytest.mark.parametrize("how", ["ctrl-c key", "SIGINT"])
def test_ctrl_c_exits_0_restoring_the_terminal(swarm: Swarm, how: str) -> None:
    with pty_monitor(swarm.socket, "--interval", "0.2") as mon:
        mon.read_until(rf"swarm {swarm.name}".encode())
        if how == "SIGINT":
            mon.proc.send_signal(signal.SIGINT)
        else:
            mon.send(b"\x03")  # the terminal turns it into SIGINT (cbreak keeps ISIG)
        assert mon.finish() == 0
        assert mon.output.endswith(LEAVE), mon.output[-200:]
        mon.assert_restored()


def test_sigterm_exits_143_restoring_the_terminal(swarm: Swarm) -> None:
    with pty_monitor(swarm.socket, "--interval", "0.2") as mon:
        mon.read_until(rf"swarm {swarm.name}".encode())
        mon.proc.send_signal(signal.SIGTERM)
        assert mon.finish() == 128 + signal.SIGTERM
        mon.assert_restored()


def test_daemon_stopping_mid_monitor_exits_3(cfnd: CfndProcess) -> None:
    assert run(cfnd.socket, "swarm", "init", "mesh", "4", "--name", "watched")[0] == 0
    with pty_monitor(cfnd.socket, "--interval", "0.2") as mon:
        mon.read_until(rb"swarm watched")
        assert cfnd.stop() == 0
        assert mon.finish() == EXIT_UNREACHABLE
        out = mon.output
        assert out.find(b"error[daemon_unreachable]") > out.rfind(LEAVE) > out.rfind(ENTER)
        assert b"systemctl start cfnd" in out or b"cfnctl status" in out
        mon.assert_restored()


def test_resize_redraws_at_once_and_ctrl_z_gives_the_terminal_back(swarm: Swarm) -> None:
    with pty_monitor(swarm.socket, "--interval", "60") as mon:
        shown = mon.read_until(rf"swarm {swarm.name}.*no agents".encode())
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


def test_stdin_not_a_terminal_still_runs_until_ctrl_c(swarm: Swarm) -> None:
    with pty_monitor(swarm.socket, "--interval", "0.2", stdin_tty=False) as mon:
        start = mon.read_until(rf"swarm {swarm.name}".encode())
        mon.read_until(re.escape(FRAME), start=start)  # it keeps refreshing
        mon.proc.send_signal(signal.SIGINT)
        assert mon.finish() == 0
        assert mon.output.endswith(LEAVE)
        mon.assert_restored()
