"""Swarm events and audit entries as rows of one log (``logs.export``), and the
export's cursor: pure functions of stream entries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from cfn_client.wire.errors import InvalidArgs
from cfn_client.wire.schema.logs import LogEntry
from cfn_client.wire.schema.swarm import Event

_DETAIL_KEEP = ("uid", "role", "code")


def from_event(event: Event) -> LogEntry:
    """A swarm event as a log entry: ``agent`` / ``task`` from its data, when named."""
    data = event.data
    agent: Any = data.get("agent", "")
    if not agent and isinstance(data.get("agents"), list):
        agent = ",".join(str(a) for a in data["agents"])
    return LogEntry(
        id=event.id,
        ts_ms=event.ts_ms,
        source="event",
        swarm=event.swarm,
        kind=event.type,
        agent=str(agent or ""),
        task=str(data.get("task", "") or ""),
        outcome=str(data.get("outcome", data.get("status", "")) or ""),
        detail=dict(data),
    )


def from_audit(entry_id: str, fields: dict[str, str]) -> LogEntry:
    """An audit stream entry (fields t_ms, uid, user, role, op, args JSON, outcome, code)."""
    raw_args = fields.get("args", "")
    args: Any
    try:
        args = msgspec.json.decode(raw_args) if raw_args else {}
    except msgspec.DecodeError:
        args = raw_args  # kept as written
    named = args if isinstance(args, dict) else {}
    try:
        ts = int(fields.get("t_ms") or entry_id.split("-")[0])
    except ValueError:
        ts = int(entry_id.split("-")[0])
    detail: dict[str, Any] = {k: fields[k] for k in _DETAIL_KEEP if k in fields}
    detail["args"] = args
    for key, value in fields.items():  # fields a newer cfnd adds are kept too
        if key not in ("t_ms", "user", "op", "outcome", "args", *_DETAIL_KEEP):
            detail[key] = value
    return LogEntry(
        id=entry_id,
        ts_ms=ts,
        source="audit",
        swarm=str(named.get("swarm") or ""),
        kind=fields.get("op", ""),
        agent=str(named.get("agent") or ""),
        task=str(named.get("task") or ""),
        user=fields.get("user", ""),
        outcome=fields.get("outcome", ""),
        detail=detail,
    )


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where an export stands: the stream (``audit``, or a swarm's events) and the last
    entry id returned from it ("" for none yet)."""

    source: str  # "audit" | "event"
    swarm: str
    last_id: str

    def encode(self) -> str:
        return f"{self.source}|{self.swarm}|{self.last_id}"


def decode_cursor(text: str) -> Cursor:
    parts = text.split("|")
    if (
        len(parts) != 3
        or parts[0] not in ("audit", "event")
        or (parts[2] and not _stream_id(parts[2]))
    ):
        raise InvalidArgs(
            f"cursor {text!r} is not one this cfnd returned; expected a page's next_cursor",
            details={"field": "cursor"},
        )
    return Cursor(parts[0], parts[1], parts[2])


def _stream_id(text: str) -> bool:
    ms, _, seq = text.partition("-")
    return ms.isdigit() and seq.isdigit()
