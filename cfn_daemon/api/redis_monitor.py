"""The Redis health monitor: a named child of cfnd's task group (``redis-monitor``).

Every ``[monitor] interval_s`` it reads INFO server / memory / stats / clients /
persistence, evaluates ``[monitor]``'s thresholds (``core.redis_health``) and raises
an alert for each problem that is new since the last poll (ok→bad edges only).
Where CONFIG is renamed or INFO denied it reads what it can and lists the rest as
unchecked. ``redis.info`` answers from a fresh sample plus the alerts in effect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from redis.exceptions import RedisClusterException, RedisError

from cfn_client.wire.schema.audit import Alert, RedisInfoResult
from cfn_daemon.api.alerts import Alerts
from cfn_daemon.core.redis_health import SECTIONS, Problem, Thresholds, edges, evaluate, figures
from cfn_daemon.settings.schema import MonitorConfig
from cfn_daemon.store.client import describe_error, is_unavailable_error
from cfn_daemon.store.store import RDB_UNCHECKED
from cfn_daemon.util.aio import until_stopped

log = structlog.get_logger("cfn.redis_monitor")


class InfoSource(Protocol):
    """What the monitor reads (``cfn_daemon.store.Store``)."""

    async def info(self, section: str) -> dict[str, Any]: ...

    async def rdb_saves(self) -> str | None: ...


def thresholds(cfg: MonitorConfig) -> Thresholds:
    """``[monitor]``'s thresholds as the pure evaluation takes them."""
    return Thresholds(
        memory_ratio_max=cfg.memory_ratio_max,
        connected_clients_max=cfg.connected_clients_max,
        evictions_max=cfg.evictions_max,
        require_aof=cfg.require_aof,
        require_noeviction=cfg.require_noeviction,
    )


class RedisMonitor:
    """Polls INFO, raises alerts on edges, remembers the alerts in effect."""

    def __init__(
        self,
        store: InfoSource,
        alerts: Alerts,
        config: Callable[[], MonitorConfig],
        timeout_s: Callable[[], float],
    ) -> None:
        self.store = store
        self.alerts = alerts
        self.config = config
        self.timeout_s = timeout_s
        self.active: dict[str, Problem] = {}
        self.raised: dict[str, Alert] = {}
        self._evicted: int | None = None

    async def sample(self) -> RedisInfoResult:
        """The figures of one INFO read (bounded by the command timeout). An outage
        raises; a refused section or CONFIG is listed in ``unchecked``."""
        info: dict[str, dict[str, Any] | None] = {}
        notes: list[str] = []
        async with asyncio.timeout(self.timeout_s()):
            for section in SECTIONS:
                try:
                    info[section] = await self.store.info(section)
                except (RedisError, RedisClusterException) as exc:
                    if is_unavailable_error(exc):
                        raise
                    info[section] = None
                    notes.append(f"INFO {section}: {describe_error(exc)}")
            saves = await self.store.rdb_saves()
        if saves is None:
            notes.append(RDB_UNCHECKED)
        return figures(info, rdb_saves=saves, unchecked=notes)

    async def poll(self) -> list[Alert]:
        """One check: alerts for the problems new since the last one (returned)."""
        fig = await self.sample()
        problems, _ = evaluate(fig, thresholds(self.config()), evicted_before=self._evicted)
        self._evicted = fig.evicted_keys
        raised, cleared = edges(self.active, problems)
        for kind in cleared:
            log.info("alert_cleared", kind=kind)
            self.active.pop(kind, None)
            self.raised.pop(kind, None)
        out = []
        for p in raised:
            alert = await self.alerts.raise_alert(p.kind, p.severity, p.message, **p.fields)
            self.active[p.kind] = p
            self.raised[p.kind] = alert
            out.append(alert)
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``; a failing poll is the Keeper's to retry (outages are
        waited out there)."""
        while not stop.is_set():
            await self.poll()
            if not await until_stopped(asyncio.sleep(self.config().interval_s), stop):
                return

    async def info(self) -> RedisInfoResult:
        """``redis.info``: a fresh sample, what could not be checked, the alerts in effect."""
        fig = await self.sample()
        _, unchecked = evaluate(fig, thresholds(self.config()), evicted_before=None)
        notes = fig.unchecked + [u for u in unchecked if u not in fig.unchecked]
        fig.unchecked = notes
        fig.alerts = list(self.raised.values())
        return fig
