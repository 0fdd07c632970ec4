"""Alerts: a critical event is a structlog warning line, an event in the daemon's events
stream (``cfn:events``) and a PUBLISH of an ``Alert`` (JSON) on ``cfn:alerts``.

    await alerts.raise_alert("swarm.destroyed", "critical", "swarm s1 destroyed", swarm="s1")

Raising never fails its caller: with Redis down the log line is still written and the
rest is skipped (logged as ``alert_not_published``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import msgspec
import structlog

from cfn_client.wire.schema.audit import Alert, Severity
from cfn_daemon.core.redact import redact
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.store.client import describe_error
from cfn_daemon.store.keys import EVENTS_MAXLEN, Keys

log = structlog.get_logger("cfn.alerts")
_json = msgspec.json.Encoder()
# A publish waits at most this long: an alert must not hold up the request that raised it.
PUBLISH_TIMEOUT_S = 2.0


class AlertStore(Protocol):
    """What ``Alerts`` needs of the store (``cfn_daemon.store.Store``)."""

    @property
    def available(self) -> bool: ...

    @property
    def redis(self) -> Any: ...

    @property
    def keys(self) -> Keys: ...


class Alerts:
    """Raises alerts: a log line, an event in ``cfn:events``, a publish on ``cfn:alerts``."""

    def __init__(self, store: AlertStore) -> None:
        self.store = store

    async def raise_alert(
        self, kind: str, severity: Severity, message: str, **fields: Any
    ) -> Alert:
        """Log, record and publish one alert; returns it. Fields are redacted."""
        alert = Alert(
            kind=kind, severity=severity, message=message, t_ms=now_ms(), fields=redact(fields)
        )
        log.warning("alert", kind=kind, severity=severity, message=message, **alert.fields)
        if not self.store.available:
            log.warning("alert_not_published", kind=kind, reason="store unavailable")
            return alert
        keys = self.store.keys
        body = _json.encode(alert)
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                async with self.store.redis.pipeline(transaction=False) as pipe:
                    pipe.xadd(
                        keys.daemon_events,
                        {"type": f"alert.{kind}", "ts": alert.t_ms, "data": body},
                        maxlen=EVENTS_MAXLEN,
                        approximate=True,
                    )
                    pipe.publish(keys.alerts, body)
                    await pipe.execute()
        except Exception as exc:  # never fail the caller: the log line above stands
            log.warning("alert_not_published", kind=kind, reason=describe_error(exc))
        return alert
