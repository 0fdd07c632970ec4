"""Redis health from INFO: the figures ``cfnctl redis info`` shows and the thresholds of
``[monitor]`` that raise alerts (docs/OPERATIONS.md, "Audit and alerts").

Pure: ``figures`` reads parsed INFO sections (as redis-py returns them), ``evaluate``
compares them with ``Thresholds``, ``edges`` keeps only the problems that are new
since the last poll (an alert on ok→bad, not on every poll).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cfn_client.wire.schema.audit import RedisInfoResult, Severity

SECTIONS = ("server", "memory", "stats", "clients", "persistence")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """``[monitor]``: above these (or with these settings off) Redis is unhealthy."""

    memory_ratio_max: float = 0.85
    connected_clients_max: int = 5000
    evictions_max: int = 0
    require_aof: bool = True
    require_noeviction: bool = True


@dataclass(frozen=True, slots=True)
class Problem:
    """One threshold crossed: ``kind`` names the check (stable across polls)."""

    kind: str
    severity: Severity
    message: str
    fields: dict[str, Any] = field(default_factory=dict)


def _int(section: Mapping[str, Any] | None, name: str) -> int | None:
    if section is None or name not in section:
        return None
    try:
        return int(section[name])
    except (TypeError, ValueError):
        return None


def _str(section: Mapping[str, Any] | None, name: str) -> str | None:
    if section is None or name not in section:
        return None
    value = section[name]
    return value.decode() if isinstance(value, bytes) else str(value)


def figures(
    info: Mapping[str, Mapping[str, Any] | None],
    *,
    rdb_saves: str | None = None,
    unchecked: list[str] | None = None,
) -> RedisInfoResult:
    """The figures of INFO's sections (a section None or absent: it could not be read,
    and each check that needs it is listed in ``unchecked``)."""
    server, memory = info.get("server"), info.get("memory")
    stats, clients, persistence = info.get("stats"), info.get("clients"), info.get("persistence")
    notes = list(unchecked or [])
    for name in SECTIONS:
        if info.get(name) is None and not any(n.startswith(f"INFO {name}") for n in notes):
            notes.append(f"INFO {name}: not readable")
    used, maxmemory = _int(memory, "used_memory"), _int(memory, "maxmemory")
    ratio = round(used / maxmemory, 4) if used is not None and maxmemory else None
    aof = _int(persistence, "aof_enabled")
    last_save = _int(persistence, "rdb_last_save_time")
    return RedisInfoResult(
        version=_str(server, "redis_version"),
        mode=_str(server, "redis_mode"),
        used_memory_bytes=used,
        maxmemory_bytes=maxmemory,
        memory_ratio=ratio,
        maxmemory_policy=_str(memory, "maxmemory_policy"),
        connected_clients=_int(clients, "connected_clients"),
        ops_per_s=_int(stats, "instantaneous_ops_per_sec"),
        evicted_keys=_int(stats, "evicted_keys"),
        keyspace_hits=_int(stats, "keyspace_hits"),
        keyspace_misses=_int(stats, "keyspace_misses"),
        aof_enabled=None if aof is None else aof == 1,
        rdb_last_save_ms=None if last_save is None else last_save * 1000,
        rdb_saves=rdb_saves,
        unchecked=notes,
    )


def evaluate(
    fig: RedisInfoResult, limits: Thresholds, *, evicted_before: int | None
) -> tuple[list[Problem], list[str]]:
    """(problems, checks that could not be made) for one poll. ``evicted_before``: the
    eviction counter at the previous poll (None on the first: no delta yet)."""
    problems: list[Problem] = []
    unchecked: list[str] = []
    if fig.memory_ratio is not None:
        if fig.memory_ratio > limits.memory_ratio_max:
            problems.append(
                Problem(
                    "health.memory",
                    "critical",
                    f"Redis uses {fig.memory_ratio:.0%} of maxmemory "
                    f"(threshold {limits.memory_ratio_max:.0%})",
                    {
                        "used_memory_bytes": fig.used_memory_bytes,
                        "maxmemory_bytes": fig.maxmemory_bytes,
                        "ratio": fig.memory_ratio,
                    },
                )
            )
    elif fig.maxmemory_bytes is None:
        unchecked.append("memory ratio: INFO memory not readable")
    if fig.connected_clients is None:
        unchecked.append("connected clients: INFO clients not readable")
    elif fig.connected_clients > limits.connected_clients_max:
        problems.append(
            Problem(
                "health.clients",
                "warning",
                f"{fig.connected_clients} clients connected to Redis "
                f"(threshold {limits.connected_clients_max})",
                {"connected_clients": fig.connected_clients},
            )
        )
    if fig.evicted_keys is None:
        unchecked.append("evictions: INFO stats not readable")
    elif evicted_before is not None and fig.evicted_keys - evicted_before > limits.evictions_max:
        delta = fig.evicted_keys - evicted_before
        problems.append(
            Problem(
                "health.evictions",
                "critical",
                f"Redis evicted {delta} keys since the last check: coordination keys "
                "(tasks, agents) may be lost",
                {"evicted": delta, "evicted_keys": fig.evicted_keys},
            )
        )
    if limits.require_aof:
        if fig.aof_enabled is None:
            unchecked.append("aof: INFO persistence not readable")
        elif not fig.aof_enabled:
            problems.append(
                Problem(
                    "health.aof_off",
                    "warning",
                    "Redis AOF is off: a Redis crash loses the writes since the last RDB save",
                    {"aof_enabled": False},
                )
            )
    if limits.require_noeviction:
        if fig.maxmemory_policy is None:
            unchecked.append("eviction policy: INFO memory not readable")
        elif fig.maxmemory_policy != "noeviction":
            problems.append(
                Problem(
                    "health.eviction_policy",
                    "critical",
                    f"Redis maxmemory-policy is {fig.maxmemory_policy}, not noeviction: "
                    "evicting coordination keys loses tasks",
                    {"maxmemory_policy": fig.maxmemory_policy},
                )
            )
    return problems, unchecked


def edges(active: Mapping[str, Problem], now: list[Problem]) -> tuple[list[Problem], list[str]]:
    """(problems that are new since the last poll, kinds that are back to normal)."""
    current = {p.kind for p in now}
    raised = [p for p in now if p.kind not in active]
    cleared = [kind for kind in active if kind not in current]
    return raised, cleared
