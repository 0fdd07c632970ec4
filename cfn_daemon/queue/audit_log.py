"""Appending to the audit stream ``cfn:audit`` (one ``AuditRecord`` per entry).

The request middleware (``api.audit``) writes one per mutating op and per denied
request; lower layers (e.g. the vote checks of ``cfnloop``) may record what they refuse
with ``append`` too. The fields are exactly those ``logs export`` reads.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import structlog

from cfn_daemon.store.keys import Keys

log = structlog.get_logger(__name__)

# [audit] max_entries unless the caller knows the configured one.
DEFAULT_MAX_ENTRIES = 100_000


class AuditRecord(msgspec.Struct, kw_only=True, frozen=True):
    """One audit entry as stored: ``args`` is redacted JSON (``core.audit_rules``)."""

    t_ms: int
    uid: int
    user: str
    role: str
    op: str
    args: str
    outcome: str  # ok | error | denied
    code: str = ""


async def append(
    redis: Any, keys: Keys, record: AuditRecord, *, max_entries: int = DEFAULT_MAX_ENTRIES
) -> None:
    """XADD ``record`` to the bounded stream (``MAXLEN ~ max_entries``); raises as Redis does."""
    fields = {f: getattr(record, f) for f in record.__struct_fields__}
    await redis.xadd(keys.audit, fields, maxlen=max_entries, approximate=True)


async def refused_message(
    redis: Any, keys: Keys, kind: str, swarm: str, data: dict[str, Any]
) -> None:
    """Audit a forged or replayed agent message (``kind`` e.g. ``security.vote_rejected``).

    The sender is an agent, not a socket caller: uid -1, user ``agent:<id>``, role
    ``agent``. Never raises: an audit write must not stop the loop that refused it.
    """
    agent = str(data.get("agent") or data.get("validator") or "")
    record = AuditRecord(
        t_ms=int(time.time() * 1000),
        uid=-1,
        user=f"agent:{agent}" if agent else "agent",
        role="agent",
        op=kind,
        args=msgspec.json.encode({"swarm": swarm, **data}).decode(),
        outcome="denied",
        code="bad_signature",
    )
    try:
        await append(redis, keys, record)
    except Exception as exc:
        log.warning("audit_write_failed", op=kind, swarm=swarm, error=str(exc))
