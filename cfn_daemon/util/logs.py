"""structlog setup: JSON lines under systemd or when piped, colourless console on a TTY."""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal, TextIO, cast

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def resolve_format(fmt: Literal["auto", "json", "console"]) -> Literal["json", "console"]:
    """``auto`` means console on a TTY, JSON otherwise (journald, files, pipes)."""
    if fmt == "auto":
        return "console" if sys.stderr.isatty() else "json"
    return fmt


class CappedLogFile:
    """stderr, when it is the log file ``path``, kept under ``max_bytes``.

    A local agent's stdout and stderr are its log file (so an interpreter crash lands
    there too). Past ``max_bytes`` the file becomes ``path.1`` (replacing the older
    one) and a fresh ``path`` is put on fds 1 and 2: at most two files of about
    ``max_bytes`` each, however long the agent runs. Checked every few KiB written.
    """

    CHECK_EVERY = 16 * 1024

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._since_check = self.CHECK_EVERY  # check at the first write

    def write(self, text: str) -> int:
        n = sys.stderr.write(text)
        self._since_check += len(text)
        if self._since_check >= self.CHECK_EVERY:
            self._since_check = 0
            self._rotate_if_full()
        return n

    def flush(self) -> None:
        sys.stderr.flush()

    def _rotate_if_full(self) -> None:
        try:
            sys.stderr.flush()
            if os.fstat(2).st_size < self.max_bytes:
                return
            os.replace(self.path, self.path + ".1")
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError:
            return  # a log that cannot rotate must not stop the agent
        try:
            sys.stdout.flush()
            os.dup2(fd, 1)
            os.dup2(fd, 2)
        finally:
            os.close(fd)


def configure_logging(
    fmt: Literal["auto", "json", "console"],
    level: str,
    log_file: str | None = None,
    max_bytes: int = 0,
) -> None:
    """(Re)configure structlog; safe to call again on SIGHUP or a log_level change.

    With ``log_file`` and ``max_bytes`` (stderr is that file), the file is rotated
    by size (see CappedLogFile)."""
    renderer: structlog.types.Processor
    if resolve_format(fmt) == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(
            # A write/flush file, all PrintLogger uses.
            file=cast(TextIO, CappedLogFile(log_file, max_bytes))
            if log_file and max_bytes > 0
            else sys.stderr
        ),
        cache_logger_on_first_use=False,
    )
