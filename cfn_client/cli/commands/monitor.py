"""``cfnctl monitor``: a live, full-screen view of every swarm (or only ``--swarm``).

On a terminal it redraws every ``--interval`` seconds from one ``swarm.list`` and
one ``swarm.status`` per swarm, over one connection, until ``q`` or Ctrl-C (both
exit 0: Ctrl-C is how a monitor is meant to end, as for ``events --follow``).
It draws on the alternate screen with the cursor hidden and reads keys from stdin
in cbreak mode; all of it is undone on the way out, whatever ends the monitor
(``q``, Ctrl-C, SIGTERM, an error, cfnd going away: exit 3 with the usual message
once the terminal is back). Ctrl-Z gives the terminal back until ``fg``; a resized
terminal is redrawn at once.

Without a terminal on stdout, with ``--once`` or with ``--json`` it prints one
snapshot and exits, so scripts never hang. The screens themselves are laid out
by the pure functions of ``cfn_client.cli.render.monitor``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Literal

import click

from cfn_client.api.sync import Client
from cfn_client.cli import render
from cfn_client.cli.env import CliEnv, Duration, pass_env
from cfn_client.cli.render import monitor as view
from cfn_client.wire.errors import EXIT_ERROR, EXIT_OK, NotFound

#: Refreshing faster than this only loads cfnd.
MIN_INTERVAL_S = 0.1
#: Alternate screen on, cursor hidden.
ENTER_SCREEN = "\x1b[?1049h\x1b[?25l"
#: Attributes reset, cursor shown, main screen back: the last thing a monitor writes.
LEAVE_SCREEN = "\x1b[0m\x1b[?25h\x1b[?1049l"
#: Keys that quit (Ctrl-C normally arrives as SIGINT instead; as a byte it quits too).
QUIT_KEYS = frozenset(b"qQ\x03")

Wake = Literal["timeout", "quit", "redraw", "key"]


class TerminalGone(Exception):
    """The terminal cannot be written to any more (hung up): nobody is watching."""


def fetch(client: Client, only: str | None, tolerate_missing: bool = False) -> view.Snapshot:
    """One snapshot: ``only`` that swarm, else ``swarm.list`` then each swarm's status.

    A listed swarm destroyed before its status arrives is skipped. ``only`` not
    found is an error, unless ``tolerate_missing`` (the monitor was already
    showing it): then the snapshot lists it as missing.
    """
    statuses = []
    missing: tuple[str, ...] = ()
    if only is not None:
        try:
            statuses.append(client.swarm_status(only))
        except NotFound:
            if not tolerate_missing:
                raise
            missing = (only,)
    else:
        for info in client.swarm_list().swarms:
            with contextlib.suppress(NotFound):
                statuses.append(client.swarm_status(info.id))
    return view.Snapshot(
        swarms=tuple(statuses), at_s=time.monotonic(), wall_ms=render.now_ms(), missing=missing
    )


def _check_interval(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if value < MIN_INTERVAL_S:
        raise click.BadParameter(f"must be at least {MIN_INTERVAL_S:g}s, not {value:g}", ctx, param)
    return value


@click.command()
@click.option(
    "--interval", type=Duration(), default=1.0, show_default=True, callback=_check_interval,
    metavar="SECONDS", help="Seconds between refreshes (also 500ms, 2s, 1m).",
)  # fmt: skip
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
@pass_env
def monitor(env: CliEnv, interval: float, once: bool) -> None:
    """Watch every swarm live (only one, with --swarm or $CFN_SWARM): queues,
    tasks, throughput and agents, redrawn every --interval. Quit with q or Ctrl-C.

    Throughput is tasks finished (succeeded or failed) per second since the
    previous refresh. When stdout is not a terminal, or with --once or --json,
    print one snapshot and exit (--json: {"swarms": [swarm status, ...]}).
    """
    live = not (once or env.json) and sys.stdout.isatty()
    # Every swarm unless --swarm / $CFN_SWARM (the current swarm narrows nothing here).
    swarm = env.swarm_flag
    try:
        with env.client() as client:
            if live:
                _watch(client, swarm, interval)
                return
            snapshot = fetch(client, swarm)
    except KeyboardInterrupt:
        env.exit(EXIT_OK)  # Ctrl-C is how a monitor is meant to end
    except TerminalGone:
        env.exit(EXIT_ERROR)  # no terminal left to say anything on
    env.emit({"swarms": list(snapshot.swarms)}, lambda: "\n".join(view.screen(snapshot)))


def _watch(client: Client, only: str | None, interval_s: float) -> None:
    """Redraw until a quit key; errors end it too, with the terminal restored first."""
    stdin_fd = sys.stdin.fileno() if sys.stdin.isatty() else None
    screen = _Screen(sys.stdout.fileno(), stdin_fd)
    previous: view.Snapshot | None = None
    try:
        screen.open()
        while True:
            snapshot = fetch(client, only, tolerate_missing=previous is not None)
            lines = view.screen(
                snapshot, view.throughput(previous, snapshot), interval_s=interval_s
            )
            previous = snapshot
            screen.draw(lines)
            deadline = time.monotonic() + interval_s
            while (left := deadline - time.monotonic()) > 0:
                wake = screen.wait(left)
                if wake == "quit":
                    return
                if wake == "redraw":  # resized, or back from Ctrl-Z
                    screen.draw(lines)
                elif wake == "timeout":
                    break
    finally:
        screen.close()


class _Screen:
    """The terminal while a monitor runs: alternate screen, hidden cursor, cbreak stdin.

    ``open`` also routes SIGWINCH, SIGTSTP, SIGTERM and SIGHUP (main thread only)
    through a wake-up pipe that ``wait`` watches next to stdin, so a resize, a
    suspension or a key is handled at once. ``close`` undoes everything ``open``
    did, even partly, and ignores Ctrl-C while it does.
    """

    def __init__(self, out_fd: int, in_fd: int | None) -> None:
        self.out_fd = out_fd
        self.in_fd = in_fd
        self._saved_mode: list[Any] | None = None
        self._entered = False
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._old_wakeup_fd: int | None = None
        self._old_handlers: dict[int, Any] = {}

    # -- set-up and tear-down

    def open(self) -> None:
        import termios

        if self.in_fd is not None:
            self._saved_mode = termios.tcgetattr(self.in_fd)
        self._enter()
        if threading.current_thread() is threading.main_thread():
            self._route_signals()

    def close(self) -> None:
        import signal

        main = threading.current_thread() is threading.main_thread()
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            self._leave()
            for signum, handler in self._old_handlers.items():
                signal.signal(signum, handler)
            self._old_handlers.clear()
            if self._old_wakeup_fd is not None:
                signal.set_wakeup_fd(self._old_wakeup_fd)
                self._old_wakeup_fd = None
            for fd in (self._wake_r, self._wake_w):
                if fd is not None:
                    os.close(fd)
            self._wake_r = self._wake_w = None
        finally:
            if old_int is not None:
                signal.signal(signal.SIGINT, old_int)

    def _enter(self) -> None:
        import tty

        if self.in_fd is not None:
            tty.setcbreak(self.in_fd)
        self._entered = True
        self._write(ENTER_SCREEN)

    def _leave(self) -> None:
        import termios

        if self._entered:
            self._entered = False
            with contextlib.suppress(TerminalGone):
                self._write(LEAVE_SCREEN)
        if self.in_fd is not None and self._saved_mode is not None:
            # TCSAFLUSH: keys typed but not read (a second q) must not reach the shell.
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.in_fd, termios.TCSAFLUSH, self._saved_mode)

    def _route_signals(self) -> None:
        import signal

        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        handlers: dict[int, Callable[[int, FrameType | None], Any]] = {
            signal.SIGWINCH: lambda signum, frame: None,  # the wake-up byte is the point
            signal.SIGTSTP: self._suspend,
            signal.SIGTERM: _exit_on_signal,
            signal.SIGHUP: _exit_on_signal,
        }
        for signum, handler in handlers.items():
            self._old_handlers[signum] = signal.signal(signum, handler)

    def _suspend(self, signum: int, frame: FrameType | None) -> None:
        """Ctrl-Z: give the terminal back, stop, and take it again on ``fg``."""
        import signal

        self._leave()
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        try:
            os.kill(os.getpid(), signal.SIGTSTP)  # returns once continued
        finally:
            signal.signal(signal.SIGTSTP, self._suspend)
            self._enter()  # the wake-up byte of this SIGTSTP makes ``wait`` redraw

    # -- drawing and waiting

    def size(self) -> tuple[int, int]:
        """(columns, lines) of the terminal now (it may have been resized)."""
        try:
            size = os.get_terminal_size(self.out_fd)
        except OSError:
            import shutil

            size = shutil.get_terminal_size()
        return size.columns, size.lines

    def draw(self, lines: Sequence[str]) -> None:
        """Show ``lines`` cut to the terminal: row by row, clearing what is left below."""
        width, height = self.size()
        fitted = view.fit(lines, width, height)
        parts = [f"\x1b[{row};1H\x1b[2K{line}" for row, line in enumerate(fitted, start=1)]
        if parts:
            parts[0] = f"\x1b[1;1H\x1b[2K\x1b[1m{fitted[0]}\x1b[0m"
        if len(fitted) < height:
            parts.append(f"\x1b[{len(fitted) + 1};1H\x1b[J")
        self._write("".join(parts))

    def wait(self, timeout_s: float) -> Wake:
        """Block until a key, a signal or ``timeout_s``; say which."""
        import select

        watched = [fd for fd in (self.in_fd, self._wake_r) if fd is not None]
        ready, _, _ = select.select(watched, [], [], timeout_s)
        if not ready:
            return "timeout"
        if self.in_fd in ready:
            try:
                keys = os.read(self.in_fd, 1024)
            except OSError:
                keys = b""
            if not keys or QUIT_KEYS.intersection(keys):
                return "quit"  # q, or end of input: the terminal went away
        if self._wake_r is not None and self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 512):
                    pass
            return "redraw"
        return "key"

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        try:
            while data:
                data = data[os.write(self.out_fd, data) :]
        except OSError as exc:
            raise TerminalGone(str(exc)) from None


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """SIGTERM, SIGHUP: end the monitor (restoring the terminal) with 128 + the signal."""
    raise click.exceptions.Exit(128 + signum)
