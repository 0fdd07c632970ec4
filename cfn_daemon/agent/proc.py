"""Run one child process in its own session with capped capture and group termination.

``run_process`` starts argv (no shell) as the leader of a new session, feeds it
``stdin_data``, captures stdout and stderr concurrently (the first ``max_bytes`` of
each stream are kept; the rest is read and discarded so the child never blocks on a
full pipe, and a short tail is kept so the last line stays visible), and stops it on a
timeout or a cancel event: SIGTERM to the whole process group, then SIGKILL after
``kill_grace_s``. When the leader exits on its own, anything it left running in its
group is terminated the same way, so a task never leaks processes (a descendant that
called ``setsid`` escapes; its pipes are closed after a short linger).

Children die with their parent, even one killed with SIGKILL: the leader is started
with ``PR_SET_PDEATHSIG`` = SIGKILL, and every running group is registered with a
small per-process reaper (``GroupReaper``) that SIGKILLs the groups still registered
once its parent is gone (it sees EOF on its pipe), so a task's descendants do not
finish their side effects after their agent died and the task was handed to another.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

TAIL_BYTES = 64 << 10
PIPE_LINGER_S = 1.0  # how long pipes may stay open after the leader exited
KILL_GRACE_S = 5.0  # SIGTERM -> SIGKILL

Stopped = Literal["timeout", "cancelled"]
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

# Loaded in the parent: a forked child must not dlopen (the loader lock may be held).
try:
    _PRCTL: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _PRCTL = None


def die_with_parent(parent_pid: int, reaper_fd: int | None) -> Any:
    """A ``preexec_fn``: SIGKILL this child when the thread that forked it ends, and
    register its group with the reaper before the program runs (no window in which a
    dying parent leaves an unregistered group behind)."""

    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            # Inherited by every descendant and never cleared: cfnd sees it on a task's
            # connection (/proc/PID/status NoNewPrivs) and gives it viewer rights at most.
            _PRCTL(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if reaper_fd is not None:
            with contextlib.suppress(OSError):
                os.write(reaper_fd, b"+%d\n" % os.getpid())
        if os.getppid() != parent_pid:  # the parent died before the prctl took effect
            os._exit(137)

    return preexec


# The reaper's whole program: no site, no imports of ours, so it starts in ~20 ms.
_REAPER_SOURCE = """
import os, signal, sys
groups = set()
for line in sys.stdin.buffer:
    op, rest = line[:1], line[1:].strip()
    if op == b"=":
        groups = {int(g) for g in rest.split(b",") if g}
    elif op == b"+":
        groups.add(int(rest))
    elif op == b"-":
        groups.discard(int(rest))
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class GroupReaper:
    """Kills this process's still-running child groups once this process is gone.

    One helper process per parent, in its own session (a kill of the parent's group
    does not reach it), reading lines from a pipe only this process and its children
    (until they exec) write to: EOF means the parent died, however it died. Lines:
    ``+pgid`` (written by the child itself before it execs, so no window is left, and
    again by the parent), ``-pgid`` when the group ended, ``=pgid,...`` to resync after
    a failed spawn (whose child registered itself, then failed to exec).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0
        self._live: set[int] = set()

    def _ensure(self) -> subprocess.Popen[bytes] | None:
        if self._proc is not None and self._pid == os.getpid() and self._proc.poll() is None:
            return self._proc
        if self._proc is not None and self._proc.stdin is not None and self._pid == os.getpid():
            self._proc.stdin.close()  # a dead reaper's pipe
        self._live = set()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _REAPER_SOURCE],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                bufsize=0,
            )
        except OSError:  # pragma: no cover - PDEATHSIG still covers the leader
            self._proc = None
            return None
        if not self._pid:
            atexit.register(self.close)
        self._pid = os.getpid()
        return self._proc

    def close(self) -> None:
        """At a clean exit: EOF to the reaper (no group is left) and reap it."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or self._pid != os.getpid():
                return
            if proc.stdin is not None:
                proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2.0)

    def fd(self) -> int | None:
        """The pipe a child writes ``+<pgid>`` to (from its ``preexec_fn``)."""
        with self._lock:
            proc = self._ensure()
            return proc.stdin.fileno() if proc is not None and proc.stdin is not None else None

    def _send(self, line: bytes) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or self._pid != os.getpid():
            return
        try:
            # One write below PIPE_BUF: atomic, never interleaved with a child's.
            os.write(proc.stdin.fileno(), line)
        except OSError:  # pragma: no cover - the reaper died; start another next time
            self._proc = None

    def add(self, pgid: int) -> None:
        """Group ``pgid`` runs (the child registered itself already; idempotent)."""
        with self._lock:
            self._live.add(pgid)
            self._send(b"+%d\n" % pgid)

    def discard(self, pgid: int) -> None:
        """Group ``pgid`` has ended: forget it (its id may be reused)."""
        with self._lock:
            self._live.discard(pgid)
            self._send(b"-%d\n" % pgid)

    def resync(self) -> None:
        """After a failed spawn: only the groups known to run stay registered."""
        with self._lock:
            self._send(b"=" + b",".join(b"%d" % g for g in sorted(self._live)) + b"\n")


REAPER = GroupReaper()


@dataclass
class ProcOutcome:
    """What happened to the child. ``returncode`` is negative for a signal (as Popen)."""

    returncode: int | None
    stdout: bytes
    stderr: bytes
    stdout_tail: bytes  # last TAIL_BYTES of stdout, even past the cap
    stdout_total: int  # bytes the child wrote to stdout
    truncated: bool
    stopped: Stopped | None

    def last_stdout_line(self) -> str | None:
        """The last non-empty stdout line (even past the cap); None if only part was kept."""
        stripped = self.stdout_tail.rstrip()
        _, sep, last = stripped.rpartition(b"\n")
        if not stripped or (not sep and self.stdout_total > len(self.stdout_tail)):
            return None
        return last.decode("utf-8", "replace").strip()

    def exit_text(self) -> str:
        """``exit status 3`` or ``killed by signal 9 (SIGKILL)``."""
        code = self.returncode
        if code is None or code >= 0:
            return f"exit status {code}"
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-code} ({name})"


class _Stream:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap - len(self.head)
        if room > 0:
            self.head += data[:room]
        self.tail += data
        if len(self.tail) > 2 * TAIL_BYTES:
            del self.tail[:-TAIL_BYTES]

    @property
    def truncated(self) -> bool:
        return self.total > self.cap


class _Capture(asyncio.SubprocessProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, cap: int) -> None:
        self.streams = {1: _Stream(cap), 2: _Stream(cap)}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.pipes_closed: asyncio.Future[None] = loop.create_future()
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd in self.streams:
            self.streams[fd].feed(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)  # a lost stdin (child never read it) is not an error
        if not self._open and not self.pipes_closed.done():
            self.pipes_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - the pgid was reused by someone else
        return False
    return True


async def _wait(fut: asyncio.Future[None], limit_s: float) -> bool:
    """Wait for ``fut`` at most ``limit_s`` seconds without cancelling it."""
    if not fut.done():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(fut), limit_s)
    return fut.done()


async def _kill_now(transport: asyncio.SubprocessTransport, proto: _Capture) -> None:
    """SIGKILL the group and reap the leader (so no Popen is left "still running")."""
    signal_group(transport.get_pid(), signal.SIGKILL)
    try:
        await _wait(proto.exited, KILL_GRACE_S)
    finally:
        transport.close()


async def _terminate(pgid: int, proto: _Capture, grace: float) -> None:
    """SIGTERM the group, wait for the leader and the pipes, then SIGKILL what is left."""
    if not signal_group(pgid, signal.SIGTERM):
        return
    both = asyncio.gather(asyncio.shield(proto.exited), asyncio.shield(proto.pipes_closed))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(both, grace)
    signal_group(pgid, signal.SIGKILL)
    await _wait(proto.exited, grace)
    await _wait(proto.pipes_closed, PIPE_LINGER_S)


async def _first_event(
    exited: asyncio.Future[None], timeout_s: float | None, cancel: asyncio.Event | None
) -> Stopped | None:
    """None when the leader exited, else why it must be stopped."""
    waiters: set[asyncio.Future[Any]] = {exited}
    cancel_task: asyncio.Task[Any] | None = None
    if cancel is not None:
        cancel_task = asyncio.ensure_future(cancel.wait())
        waiters.add(cancel_task)
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if cancel_task is not None:
            cancel_task.cancel()
    if exited.done():
        return None
    return "cancelled" if cancel is not None and cancel.is_set() else "timeout"


# The uid/gid tasks run as ([agents] run_as, cfn-agent --run-as); None: ours.
RUN_AS: tuple[int, int] | None = None


def _run_as() -> dict[str, Any]:
    if RUN_AS is None or os.geteuid() != 0:
        return {}
    uid, gid = RUN_AS
    return {"user": uid, "group": gid, "extra_groups": []}


def protect_self() -> None:
    """Make this process undumpable: a task running as our uid cannot read our
    /proc/PID/environ or memory (Redis password, agent key) nor ptrace us."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_DUMPABLE, 0, 0, 0, 0)


async def run_process(
    argv: Sequence[str],
    *,
    stdin_data: bytes = b"",
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout_s: float | None = None,
    cancel: asyncio.Event | None = None,
    max_bytes: int = 1 << 20,
    kill_grace_s: float = KILL_GRACE_S,
) -> ProcOutcome:
    """Run argv to completion (or until stopped). Spawn failures raise ``OSError``."""
    loop = asyncio.get_running_loop()
    spawn = asyncio.ensure_future(
        loop.subprocess_exec(
            lambda: _Capture(loop, max_bytes),
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=die_with_parent(os.getpid(), REAPER.fd()),
            close_fds=True,  # a task inherits no descriptor but its pipes
            **_run_as(),
        )
    )
    try:
        # Cancelling subprocess_exec mid-spawn can hang (CPython 3.11 waits for pipes
        # that never connected) and would only kill the leader: shield it instead.
        transport, proto = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        try:
            transport, proto = await spawn
        except OSError:
            REAPER.resync()
            raise
        await _kill_now(transport, proto)
        REAPER.discard(transport.get_pid())
        raise
    except OSError:
        REAPER.resync()
        raise
    pgid = transport.get_pid()  # session leader: pgid == pid
    REAPER.add(pgid)
    finished = False
    try:
        stdin = transport.get_pipe_transport(0)
        if isinstance(stdin, asyncio.WriteTransport):
            with contextlib.suppress(OSError):  # the child may exit without reading
                stdin.write(stdin_data)
            stdin.close()
        stopped = await _first_event(proto.exited, timeout_s, cancel)
        if stopped is None:
            await _wait(proto.pipes_closed, PIPE_LINGER_S)
        await _terminate(pgid, proto, kill_grace_s)  # stragglers (or the whole task)
        finished = True
    finally:
        if finished:
            transport.close()
        else:  # we were cancelled ourselves: no grace, nothing left behind
            await _kill_now(transport, proto)
        REAPER.discard(pgid)
    out, err = proto.streams[1], proto.streams[2]
    return ProcOutcome(
        returncode=transport.get_returncode(),
        stdout=bytes(out.head),
        stderr=bytes(err.head),
        stdout_tail=bytes(out.tail[-TAIL_BYTES:]),
        stdout_total=out.total,
        truncated=out.truncated or err.truncated,
        stopped=stopped,
    )
