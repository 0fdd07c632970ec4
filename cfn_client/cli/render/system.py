"""Human output of the system ops: status, ping, doctor, config."""

from __future__ import annotations

from typing import Any

from cfn_client.cli.render.common import fields, format_duration, format_ms, format_value, table
from cfn_client.wire.schema.system import (
    Check,
    ConfigResetResult,
    ConfigSetResult,
    ConfigShowResult,
    ConfigValidateResult,
    DoctorResult,
    PingResult,
    StatusResult,
)

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
        for what in store.unchecked:
            pairs.append(("  not checked", what))
    total = result.swarms.total
    pairs.append(("swarms", "unknown (store unavailable)" if total is None else total))
    pairs.append(("metrics", result.metrics_url or result.metrics_error or "off"))
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
