"""Progress of long operations (swarm scale and destroy, epics): one live line on stderr.

Only for a person: the line is drawn when stderr is a terminal and the command is not
in ``--json`` mode, and erased when the operation ends, so stdout carries the result
alone and a pipe or a log file never sees a carriage return. Otherwise it prints nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

#: How often the elapsed time on the line is refreshed.
TICK_S = 0.5
# Carriage return, then erase to the end of the line.
_CLEAR = "\r\x1b[K"


class Progress:
    """A status line that ``update`` rewrites in place; a no-op when not ``enabled``."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self._text = ""
        self._began = time.monotonic()
        self._lock = threading.Lock()

    def update(self, text: str) -> None:
        """Show ``text`` (with the time elapsed so far) instead of the previous line."""
        self._text = text
        self.redraw()

    def redraw(self) -> None:
        """Draw the line again (the elapsed time moves on); nothing when disabled."""
        if not self.enabled or not self._text:
            return
        elapsed = time.monotonic() - self._began
        with self._lock:
            self.stream.write(f"{_CLEAR}{self._text} ({elapsed:.0f}s)")
            self.stream.flush()

    def clear(self) -> None:
        """Erase the line (the cursor ends at the start of an empty line)."""
        if not self.enabled:
            return
        with self._lock:
            self.stream.write(_CLEAR)
            self.stream.flush()


def wanted(json_mode: bool, stream: TextIO) -> bool:
    """Whether a live line may be drawn on ``stream``: a terminal, and not ``--json``."""
    return not json_mode and bool(getattr(stream, "isatty", lambda: False)())


@contextmanager
def progress(text: str, *, json_mode: bool, stream: TextIO | None = None) -> Iterator[Progress]:
    """A live ``text`` line on stderr (or ``stream``) while the block runs; the elapsed
    time ticks on it every ``TICK_S`` and the line is erased at the end."""
    out = stream if stream is not None else sys.stderr
    line = Progress(out, wanted(json_mode, out))
    stop = threading.Event()
    ticker: threading.Thread | None = None
    if line.enabled:

        def tick() -> None:
            while not stop.wait(TICK_S):  # ends when the block does
                line.redraw()

        ticker = threading.Thread(target=tick, name="cfnctl-progress", daemon=True)
        ticker.start()
    line.update(text)
    try:
        yield line
    finally:
        stop.set()
        if ticker is not None:
            ticker.join(timeout=2 * TICK_S)
        line.clear()
