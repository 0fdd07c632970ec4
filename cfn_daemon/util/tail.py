"""Bounded reads of the end of a file (agent logs): never the whole file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Tail:
    """The last bytes of a file, from a line start when it was cut."""

    text: str
    size: int  # the file's size in bytes
    truncated: bool  # the file holds more than ``text``


def read_tail(path: Path, max_bytes: int) -> Tail | None:
    """The last ``max_bytes`` of ``path`` (at most), or None when it cannot be read."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            start = max(0, size - max_bytes)
            f.seek(start)
            data = f.read(max_bytes)
    except OSError:
        return None
    if start > 0:
        # Cut mid-line: start at the next whole line (unless the tail is one long line).
        nl = data.find(b"\n")
        if 0 <= nl < len(data) - 1:
            data = data[nl + 1 :]
    return Tail(data.decode(errors="replace"), size, start > 0)
