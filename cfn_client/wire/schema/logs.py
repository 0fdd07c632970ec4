"""Schemas of ``logs.export``: swarm events and audit entries, page by page."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from cfn_client.wire.protocol import Args, Result

LogSource = Literal["event", "audit"]
#: The CSV columns of ``cfnctl logs export``, in order.
LOG_COLUMNS = (
    "time", "source", "swarm", "kind", "agent", "task", "user", "outcome", "detail",
)  # fmt: skip


class LogsExportArgs(Args, kw_only=True):
    """Entries from ``since_ms`` to ``until_ms`` (inclusive; None: no bound) of every
    swarm's events and the audit stream, or of one ``swarm`` (its events, and the audit
    entries whose arguments name it). Pass a page's ``next_cursor`` as ``cursor``."""

    swarm: str | None = None
    since_ms: Annotated[int, Meta(ge=0)] | None = None
    until_ms: Annotated[int, Meta(ge=0)] | None = None
    sources: list[LogSource] = msgspec.field(default_factory=lambda: ["event", "audit"])
    cursor: str | None = None
    limit: Annotated[int, Meta(ge=1, le=5000)] = 1000


class LogEntry(Result, kw_only=True):
    """One event or audit entry. ``id``: its stream id; ``kind``: the event type or the
    audited op; ``detail``: the event's data or the audit entry's other fields."""

    id: str
    ts_ms: int
    source: LogSource
    swarm: str = ""
    kind: str = ""
    agent: str = ""
    task: str = ""
    user: str = ""
    outcome: str = ""
    detail: dict[str, Any] = {}


class LogsPage(Result, kw_only=True):
    entries: list[LogEntry]
    next_cursor: str | None = None
