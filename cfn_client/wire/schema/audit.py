"""Schemas of the audit and Redis-health ops (``audit.search``, ``redis.info``) and of
the alerts cfnd publishes on ``cfn:alerts`` (docs/OPERATIONS.md, "Audit and alerts")."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from cfn_client.wire.protocol import Args, Result

Severity = Literal["warning", "critical"]
Outcome = Literal["ok", "error", "denied"]

AUDIT_LIMIT_DEFAULT = 100
AUDIT_LIMIT_MAX = 10_000


class Alert(msgspec.Struct, kw_only=True):
    """One alert: published as JSON on ``cfn:alerts``, appended to the daemon's events
    stream ``cfn:events`` and logged. ``kind`` is stable (``health.eviction_policy``,
    ``audit.denial_burst``, ``swarm.destroyed``, ``auth.changed`` ...)."""

    kind: str
    severity: Severity
    message: str
    t_ms: int
    fields: dict[str, Any] = {}


class AuditEntry(Result, kw_only=True):
    """One entry of the ``cfn:audit`` stream (``args`` is redacted JSON)."""

    id: str
    t_ms: int
    uid: int
    user: str
    role: str
    op: str
    args: str
    outcome: str
    code: str = ""


class AuditSearchArgs(Args, kw_only=True):
    since_ms: int | None = None
    until_ms: int | None = None
    user: str | None = None  # a user name or a numeric uid
    op: str | None = None  # an op (``swarm.destroy``) or an area (``swarm``)
    text: str | None = None  # case-insensitive, anywhere in the entry
    limit: int = AUDIT_LIMIT_DEFAULT


class AuditSearchResult(Result, kw_only=True):
    """Matching entries, newest first. ``scanned`` entries of the range were read;
    ``more``: the scan bound or ``limit`` stopped before the range's end."""

    entries: list[AuditEntry]
    scanned: int = 0
    more: bool = False


class RedisInfoArgs(Args):
    pass


class RedisInfoResult(Result, kw_only=True):
    """What Redis INFO shows (``cfnctl redis info``); None: not reported."""

    version: str | None = None
    mode: str | None = None  # standalone, cluster, sentinel
    used_memory_bytes: int | None = None
    maxmemory_bytes: int | None = None  # 0: no limit
    memory_ratio: float | None = None  # used / maxmemory, when maxmemory is set
    maxmemory_policy: str | None = None
    connected_clients: int | None = None
    ops_per_s: int | None = None
    evicted_keys: int | None = None
    keyspace_hits: int | None = None
    keyspace_misses: int | None = None
    aof_enabled: bool | None = None
    rdb_last_save_ms: int | None = None
    rdb_saves: str | None = None  # the ``save`` schedule ("" = RDB off)
    #: What could not be checked and why (CONFIG renamed, INFO denied ...).
    unchecked: list[str] = msgspec.field(default_factory=list)
    #: The health monitor's alerts still in effect (raised, not yet back to normal).
    alerts: list[Alert] = msgspec.field(default_factory=list)
