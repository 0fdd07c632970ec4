"""Appending to the audit stream ``cfn:audit`` (one ``AuditRecord`` per entry).

The request middleware (``api.audit``) writes one per mutating op and per denied
request; lower layers (e.g. the vote checks of ``cfnloop``) may record what they refuse
with ``append`` too. The fields are exactly those ``logs export`` reads.
"""

from __future__ import annotations

from typing import Any

import msgspec

from cfn_daemon.store.keys import Keys

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
