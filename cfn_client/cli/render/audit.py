"""Text views of ``cfnctl audit search`` and ``cfnctl redis info``."""

from __future__ import annotations

from cfn_client.cli.render.common import fields, format_age, format_time, shorten, table
from cfn_client.wire.schema.audit import AuditSearchResult, RedisInfoResult

__all__ = ["audit_table", "redis_info"]


def audit_table(result: AuditSearchResult) -> str:
    """One row per entry, newest first; a closing line says when more may match."""
    if not result.entries:
        return f"no audit entries match ({result.scanned} read)"
    rows = [
        (format_time(e.t_ms), e.user, e.uid, e.role, e.op, e.outcome, e.code or "-",
         shorten(e.args, 60))
        for e in result.entries
    ]  # fmt: skip
    out = table(("TIME", "USER", "UID", "ROLE", "OP", "OUTCOME", "CODE", "ARGS"), rows)
    if result.more:
        out += "\n(more entries may match: narrow --since/--until or raise --limit; "
        out += f"{result.scanned} read)"
    return out


def _bytes(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _onoff(value: bool | None) -> str:
    return "?" if value is None else ("on" if value else "off")


def redis_info(info: RedisInfoResult) -> str:
    """The figures as ``label: value`` lines, then what was not checked and the alerts."""
    if info.maxmemory_bytes == 0:
        memory = f"{_bytes(info.used_memory_bytes)} (no maxmemory)"
    else:
        ratio = "?" if info.memory_ratio is None else f"{info.memory_ratio:.1%}"
        memory = f"{_bytes(info.used_memory_bytes)} of {_bytes(info.maxmemory_bytes)} ({ratio})"
    rdb = "schedule unknown" if info.rdb_saves is None else info.rdb_saves or "off"
    last = "never" if not info.rdb_last_save_ms else format_age(info.rdb_last_save_ms) + " ago"
    out = fields(
        [
            ("version", info.version or "?"),
            ("mode", info.mode or "?"),
            ("memory", memory),
            ("eviction policy", info.maxmemory_policy or "?"),
            ("clients", "?" if info.connected_clients is None else info.connected_clients),
            ("ops/s", "?" if info.ops_per_s is None else info.ops_per_s),
            ("evicted keys", "?" if info.evicted_keys is None else info.evicted_keys),
            ("keyspace hits", "?" if info.keyspace_hits is None else info.keyspace_hits),
            ("keyspace misses", "?" if info.keyspace_misses is None else info.keyspace_misses),
            ("aof", _onoff(info.aof_enabled)),
            ("rdb saves", rdb),
            ("last rdb save", last),
        ]
    )
    if info.unchecked:
        out += "\nnot checked:\n" + "\n".join(f"  {u}" for u in info.unchecked)
    if info.alerts:
        out += "\nalerts:\n" + "\n".join(
            f"  {a.severity} {a.kind}: {a.message}" for a in info.alerts
        )
    else:
        out += "\nalerts: none"
    return out
