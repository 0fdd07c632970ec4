"""Run one child process in its own session with capped capture and group termination.

``run_process`` starts argv (no shell) as the leader of a new session, feeds it
``stdin_data``, captures stdout and stderr concurrently (the first ``max_bytes`` of
each stream are kept; the rest is read and discarded so the child never blocks on a
full pipe, and a short tail is kept so the last line stays visible), and stops it on a
timeout or a cancel event: SIGTERM to the whole process group, then SIGKILL after
``kill_grace_s``. When the leader exits on its own, anything it left running in its
group is terminated the same way, so a task never leaks processes (a descendant that
called ``setsid`` escapes; its pipes are closed after a short linger).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

TAIL_BYTES = 64 << 10
PIPE_LINGER_S = 1.0  # how long pipes may stay open after the leader exited
KILL_GRACE_S = 5.0  # SIGTERM -> SIGKILL

Stopped = Literal["timeout", "cancelled"]


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
        )
    )
    try:
        # Cancelling subprocess_exec mid-spawn can hang (CPython 3.11 waits for pipes
        # that never connected) and would only kill the leader: shield it instead.
        transport, proto = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        with contextlib.suppress(OSError):
            await _kill_now(*await spawn)
        raise
    pgid = transport.get_pid()  # session leader: pgid == pid
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
