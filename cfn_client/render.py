"""Output for humans (aligned text, no extra dependencies) and for scripts (``--json``).

Every function returns a string; the CLI decides where it goes. ``--json``
prints one JSON document per command, and one JSON line per event when streaming.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from cfn_client.errors import CfnError
from cfn_client.protocol import (
    Check,
    ConfigResetResult,
    ConfigSetResult,
    ConfigShowResult,
    ConfigValidateResult,
    DoctorResult,
    PingResult,
    StatusResult,
)

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


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    cells = [[_cell(c) for c in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def fields(pairs: Iterable[tuple[str, Any]]) -> str:
    """``label: value`` lines with aligned values; labels starting with spaces nest."""
    items = [(label, format_value(value)) for label, value in pairs]
    width = max((len(label) for label, _ in items), default=0) + 1
    return "\n".join(f"{(label + ':').ljust(width)} {value}".rstrip() for label, value in items)


# --------------------------------------------------------------------------- op results


def status(result: StatusResult, verbose: bool = False) -> str:
    """``cfnctl status``."""
    store = result.store
    pairs: list[tuple[str, Any]] = [
        (
            "daemon",
            f"cfnd {result.version}, pid {result.pid}, up {format_duration(result.uptime_s)}",
        ),
        ("socket", result.socket),
        ("state dir", result.state_dir),
        ("config", ", ".join(result.config_sources) or "defaults"),
        ("redis", f"{store.mode} ({'available' if store.available else 'UNAVAILABLE'})"),
        ("  url", store.url),
        ("  version", store.version or "-"),
        ("  latency", format_ms(store.latency_ms)),
    ]
    if store.error:
        pairs.append(("  error", store.error))
    if store.retry_in_s is not None and not store.available:
        pairs.append(("  retry in", f"{store.retry_in_s:.1f}s"))
    if verbose:
        pairs.append(("  key prefix", store.key_prefix))
        if store.embedded_pid is not None:
            pairs.append(("  embedded pid", store.embedded_pid))
        if store.aof_enabled is not None:
            pairs.append(("  aof", "on" if store.aof_enabled else "off"))
        if store.rdb_saves is not None:
            pairs.append(("  rdb saves", store.rdb_saves or "off"))
    total = result.swarms.total
    pairs.append(("swarms", "unknown (store unavailable)" if total is None else total))
    if verbose and result.server is not None:
        srv = result.server
        pairs += [
            ("server", ""),
            ("  connections", srv.connections),
            ("  requests", srv.requests_total),
            ("  errors", srv.errors_total),
            ("  in flight", srv.inflight),
        ]
    return fields(pairs)


def store_unavailable_hint(result: StatusResult) -> str:
    """The line ``status`` adds (on stderr) when Redis is down."""
    store = result.store
    retry = f"; next attempt in {store.retry_in_s:.1f}s" if store.retry_in_s is not None else ""
    why = f": {store.error}" if store.error else ""
    return (
        f"Redis is unavailable ({store.mode} at {store.url}){why}. cfnd keeps retrying{retry}; "
        "commands that need the store fail until it is back — check the Redis server, "
        "then retry `cfnctl status`"
    )


def ping(result: PingResult, rtt_ms: float) -> str:
    """``cfnctl ping``."""
    return f"pong from cfnd in {format_ms(rtt_ms)}"


def doctor(result: DoctorResult) -> str:
    """``cfnctl doctor``: one row per check; the fix goes under a check that did not pass."""
    rows: list[list[str]] = []
    for check in result.checks:
        rows.append([check.name, check_status(check), check.detail])
        if not check.ok and check.fix:
            rows.append(["", "", f"fix: {check.fix}"])
    failed = sum(not c.ok and not c.warning for c in result.checks)
    warned = sum(not c.ok and c.warning for c in result.checks)
    summary = f"{failed} check(s) failed" if failed else "all checks passed"
    if warned:
        summary += f", {warned} warning(s)"
    return table(["CHECK", "RESULT", "DETAIL"], rows) + "\n\n" + summary


def check_status(check: Check) -> str:
    """``ok``, ``WARN`` (failed but only advisory) or ``FAIL``."""
    if check.ok:
        return "ok"
    return "WARN" if check.warning else "FAIL"


def config_show(result: ConfigShowResult) -> str:
    """``cfnctl config show``."""
    rows = [[e.key, format_value(e.value), e.source] for e in result.entries]
    return table(["KEY", "VALUE", "SOURCE"], rows)


def config_set(result: ConfigSetResult) -> str:
    """``cfnctl config set``."""
    return (
        f"{result.key} = {format_value(result.value)} "
        f"(was {format_value(result.previous)}; source runtime)"
    )


def config_reset(result: ConfigResetResult) -> str:
    """``cfnctl config reset``."""
    if not result.reset:
        return "no runtime overrides to reset"
    return f"reset {len(result.reset)} runtime override(s): {', '.join(result.reset)}"


def config_validate(result: ConfigValidateResult) -> str:
    """``cfnctl config validate``."""
    return f"{result.source}: {'valid' if result.valid else 'INVALID'}"
