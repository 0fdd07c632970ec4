"""Schemas of the system ops: ping, status, doctor and config.

Each op has an ``*Args`` Struct (what a request carries) and a ``*Result`` (what the
reply holds); ``wire.ops`` registers them by op name.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from cfn_client.wire.protocol import Args, Result


class PingArgs(Args):
    pass


class PingResult(Result):
    server_time_ms: int
    pong: bool = True


class StatusArgs(Args):
    verbose: bool = False


class StoreStatus(Result):
    """How cfnd reaches Redis, and whether it can right now."""

    mode: Literal["embedded", "external", "cluster"]
    url: str
    available: bool
    key_prefix: str
    version: str | None = None
    latency_ms: float | None = None
    error: str | None = None
    retry_in_s: float | None = None
    embedded_pid: int | None = None
    aof_enabled: bool | None = None
    rdb_saves: str | None = None
    #: What could not be checked and why, e.g. "rdb saves: CONFIG GET refused or renamed"
    #: (a guide-style redis.conf renames CONFIG): never reported as "off".
    unchecked: list[str] = msgspec.field(default_factory=list)


class ServerStats(Result):
    connections: int
    requests_total: int
    errors_total: int
    inflight: int
    # Connections cfnd closed itself: idle timeout, room for a new one, slow frame.
    closed_by_limits: int = 0


class SwarmCounts(Result):
    total: int | None = None


class StatusResult(Result):
    version: str
    pid: int
    uptime_s: float
    started_at_ms: int
    socket: str
    state_dir: str
    config_sources: list[str]
    store: StoreStatus
    swarms: SwarmCounts
    server: ServerStats | None = None
    # Prometheus /metrics (``[metrics]``); None when off or its port could not be bound.
    metrics_url: str | None = None
    metrics_error: str | None = None


class DoctorArgs(Args):
    pass


class Check(Result):
    """One doctor finding; a failed ``warning`` check does not fail the doctor."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False


class DoctorResult(Result):
    ok: bool
    checks: list[Check]


class ConfigShowArgs(Args):
    key: str | None = None


class ConfigEntry(Result):
    key: str
    value: Any
    source: str


class ConfigShowResult(Result):
    entries: list[ConfigEntry]


class ConfigSetArgs(Args):
    key: str
    value: str


class ConfigSetResult(Result):
    key: str
    value: Any
    previous: Any


class ConfigResetArgs(Args):
    key: str | None = None


class ConfigResetResult(Result):
    reset: list[str]


class ConfigValidateArgs(Args):
    """Validate TOML text (when given) or the daemon's current effective config."""

    text: str | None = None
    name: str = "<text>"


class ConfigValidateResult(Result):
    valid: bool
    source: str


class WebLoginArgs(Args):
    """A one-time login URL for the web console, at the caller's role or a lower one."""

    role: Literal["viewer", "operator", "admin"] | None = None


class WebLoginResult(Result):
    url: str  # open it once; it carries the token
    role: str
    expires_in_s: float
