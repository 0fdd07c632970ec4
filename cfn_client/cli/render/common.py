"""Output for humans (aligned text, no extra dependencies) and for scripts (``--json``).

Every function returns a string; the CLI decides where it goes. ``--json``
prints one JSON document per command, and one JSON line per event when streaming.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

import click
import msgspec

from cfn_client.wire.errors import CfnError

_encoder = msgspec.json.Encoder()

# Error details worth a line of their own under the message, in this order.
ERROR_DETAIL_KEYS = ("file", "key", "value", "expected", "socket", "retry_after_s", "fix")


# --------------------------------------------------------------------------- JSON


def to_json(obj: Any) -> str:
    """One compact JSON document (Structs, lists and dicts alike)."""
    return _encoder.encode(obj).decode()


def json_lines(items: Iterable[Any]) -> Iterable[str]:
    """One JSON document per item, for streams."""
    return (to_json(item) for item in items)


def error_document(err: CfnError) -> dict[str, Any]:
    """The ``--json`` form of an error: ``{"ok": false, "error": {...}}``."""
    return {
        "ok": False,
        "error": {
            "code": err.instance_code,
            "message": err.message,
            "details": msgspec.to_builtins(err.details, str_keys=True),
            "exit_code": err.exit_code,
        },
    }


def cli_error_document(code: str, message: str, exit_code: int) -> dict[str, Any]:
    """The ``--json`` form of an error cfnctl found itself (bad usage, unreadable file)."""
    error = {"code": code, "message": message, "details": {}, "exit_code": exit_code}
    return {"ok": False, "error": error}


def error_text(err: CfnError, prog: str = "cfnctl") -> str:
    """``cfnctl: error[<code>]: <message>`` plus one indented line per notable detail."""
    lines = [f"{prog}: error[{err.instance_code}]: {err.message}"]
    for key in ERROR_DETAIL_KEYS:
        value = err.details.get(key)
        if value is not None and str(value) not in err.message:
            lines.append(f"  {key}: {format_value(value)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- primitives


def format_value(value: Any) -> str:
    """A config or detail value as a human reads it: TOML-ish scalars, JSON for the rest."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)  # exact: "0.8", "10.0", never 1e+06
    return to_json(value)


def format_duration(seconds: float) -> str:
    """``42.0s``, ``5m 03s``, ``3h 02m``, ``2d 04h``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    days, rem = divmod(s, 86_400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def format_ms(ms: float | None) -> str:
    """Milliseconds with sensible precision."""
    if ms is None:
        return "-"
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.0f} ms"


def _cell(value: Any) -> str:
    # One row per line: a newline in a value would break the columns.
    return str(value).replace("\n", " ")


# --------------------------------------------------------------------------- the terminal

#: Marks a cell cut to fit the terminal.
ELLIPSIS = "…"
#: A column is never cut below this many characters (nor below its header).
MIN_COLUMN = 6
# Cell values shown in colour (on a terminal, without NO_COLOR): states people scan for.
STATE_COLOURS = {
    **dict.fromkeys(("done", "succeeded", "idle", "ok", "PROCEED", "active", "pass"), "green"),
    **dict.fromkeys(("running", "busy", "loop2", "loop3", "loop4", "starting"), "cyan"),
    **dict.fromkeys(("escalated", "ESCALATE", "DEFER", "draining", "blocked", "warn"), "yellow"),
    **dict.fromkeys(("failed", "dead", "lost", "cancelled", "error", "fail"), "red"),
}


def colour_enabled(stream: TextIO | None = None) -> bool:
    """Colour only for a person: ``stream`` (stdout) is a terminal and NO_COLOR is unset
    or empty (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    stream = stream if stream is not None else sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def style(text: str, *, colour: bool | None = None, **styles: Any) -> str:
    """``click.style(text, **styles)`` when colour is on, else ``text`` unchanged: the one
    place output gets colour. ``colour`` overrides the check (tests, callers that know)."""
    on = colour_enabled() if colour is None else colour
    return click.style(text, **styles) if on else text


def terminal_width(stream: TextIO | None = None) -> int | None:
    """The columns tables must fit in: the terminal's (or ``$COLUMNS``); None when output
    goes to a file or pipe with no ``$COLUMNS``, so scripts get whole cells."""
    stream = stream if stream is not None else sys.stdout
    if not os.environ.get("COLUMNS") and not getattr(stream, "isatty", lambda: False)():
        return None
    import shutil  # not for output to a pipe or file

    return shutil.get_terminal_size().columns


def fit_widths(widths: Sequence[int], floors: Sequence[int], limit: int, sep: int = 2) -> list[int]:
    """Column widths that fit in ``limit`` characters: the widest columns are cut first,
    all to one cap, never below their floors (so the table stays wider than ``limit``
    when every column is at its floor)."""
    gaps = sep * (len(widths) - 1)

    def total(cap: int) -> int:
        return sum(max(f, min(w, cap)) for w, f in zip(widths, floors, strict=True)) + gaps

    if total(max(widths, default=0)) <= limit:
        return list(widths)
    lo, hi = 0, max(widths)  # the largest cap that fits (bisection: bounded)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if total(mid) <= limit else (lo, mid - 1)
    fitted = [max(f, min(w, lo)) for w, f in zip(widths, floors, strict=True)]
    spare = limit - total(lo)
    for i, w in enumerate(widths):  # what the cap leaves over goes to the cut columns
        if spare > 0 and fitted[i] < w:
            fitted[i] += 1
            spare -= 1
    return fitted


def clip(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, an ellipsis marking a cut."""
    return text if len(text) <= width else text[: max(0, width - 1)] + ELLIPSIS


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    width: int | None = -1,
    colour: bool | None = None,
) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded.

    Every table of cfnctl goes through here. It fits ``width`` columns (default: the
    terminal's, see ``terminal_width``; None: no limit) by cutting the widest columns
    with an ellipsis; headers are bold and known states coloured when colour is on.
    """
    limit = terminal_width() if width == -1 else width
    on = colour_enabled() if colour is None else colour
    cells = [[_cell(c) for c in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(len(headers))]
    if limit is not None:
        floors = [min(w, max(MIN_COLUMN, len(h))) for w, h in zip(widths, cells[0], strict=True)]
        widths = fit_widths(widths, floors, limit)
    lines = []
    for n, row in enumerate(cells):
        padded = []
        for i, c in enumerate(row):
            text = clip(c, widths[i]) if i < len(widths) else c
            pad = " " * (widths[i] - len(text)) if i < len(widths) else ""
            if n == 0:
                text = style(text, colour=on, bold=True)
            elif c in STATE_COLOURS:
                text = style(text, colour=on, fg=STATE_COLOURS[c])
            padded.append(text + pad)
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def fields(pairs: Iterable[tuple[str, Any]]) -> str:
    """``label: value`` lines with aligned values; labels starting with spaces nest."""
    items = [(label, format_value(value)) for label, value in pairs]
    width = max((len(label) for label, _ in items), default=0) + 1
    return "\n".join(f"{(label + ':').ljust(width)} {value}".rstrip() for label, value in items)


# --------------------------------------------------------------------------- swarms

# Long free text (task text, errors, event values) is cut to this many characters in tables.
CELL_WIDTH = 48
# Lines of a failed task's stderr that `run --wait` shows.
STDERR_TAIL_LINES = 20


def now_ms() -> int:
    return int(time.time() * 1000)


def shorten(text: str, width: int = CELL_WIDTH) -> str:
    """One line of at most ``width`` characters (``...`` marks a cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def format_time(ms: int) -> str:
    """A local timestamp: ``14:03:07.125`` today, ``2024-05-01 14:03:07`` before."""
    if ms <= 0:
        return "-"
    when = datetime.fromtimestamp(ms / 1000)
    if when.date() == datetime.now().date():
        return when.strftime("%H:%M:%S.") + f"{ms % 1000:03d}"
    return when.strftime("%Y-%m-%d %H:%M:%S")


def format_age(ms: int | None, now: int | None = None) -> str:
    """How long ago ``ms`` (epoch ms) was, for tables: ``12s ago``, ``3m ago``, ``2h ago``,
    ``4d ago``; ``-`` when unknown. (``--json`` keeps the epoch milliseconds.)"""
    if not ms:
        return "-"
    return format_ago(max(0, (now if now is not None else now_ms()) - ms) / 1000)


def format_ago(seconds: float) -> str:
    """An age in its largest whole unit: ``12s ago``, ``3m ago``, ``2h ago``, ``4d ago``."""
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def format_run_time(ms: float) -> str:
    """A task's run time: ``12 ms`` below a second, else ``4.2s``, ``3m 05s``."""
    return format_ms(ms) if ms < 1000 else format_duration(ms / 1000)


def format_counts(counts: Mapping[str, int]) -> str:
    """``queued 2, running 1`` (``none`` when every count is zero)."""
    parts = [f"{name} {n}" for name, n in counts.items() if n]
    return ", ".join(parts) or "none"
