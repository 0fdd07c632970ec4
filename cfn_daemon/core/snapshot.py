"""Snapshot rules that are values in, values out: reading a document (refusing one cfn
does not understand), renaming its swarm, and how records change when imported."""

from __future__ import annotations

from typing import Any, get_args

import msgspec

from cfn_client.wire.errors import InvalidArgs
from cfn_client.wire.schema.snapshot import (
    SNAPSHOT_FORMAT,
    SNAPSHOT_VERSION,
    Record,
    Snapshot,
    SnapshotHeader,
)
from cfn_client.wire.schema.swarm import TaskStatus

#: Agent statuses of a running process: imported agents are not running.
LIVE_AGENT_STATUSES = ("starting", "idle", "busy", "draining")
#: Task statuses whose work was in flight on an agent: queued again on import.
IN_FLIGHT = ("assigned", "running")


def decode(document: bytes) -> Snapshot:
    """The document, or ``InvalidArgs`` saying what is wrong with it (which field, what
    was expected), refusing an unknown format or version before reading the rest."""
    try:
        head = msgspec.json.decode(document, type=SnapshotHeader)
    except msgspec.DecodeError as exc:
        raise InvalidArgs(
            f"not a cfn snapshot: {exc}; expected a JSON object written by "
            "`cfnctl snapshot export`",
            details={"reason": str(exc)},
        ) from None
    if head.format != SNAPSHOT_FORMAT:
        raise InvalidArgs(
            f"not a cfn snapshot: format {head.format!r}; expected {SNAPSHOT_FORMAT!r}",
            details={"field": "format", "expected": SNAPSHOT_FORMAT},
        )
    if head.version != SNAPSHOT_VERSION:
        newer = " (written by a newer cfn)" if head.version > SNAPSHOT_VERSION else ""
        raise InvalidArgs(
            f"snapshot version {head.version}{newer} is not understood; this cfnd reads "
            f"version {SNAPSHOT_VERSION}",
            details={"field": "version", "expected": SNAPSHOT_VERSION},
        )
    try:
        doc = msgspec.json.decode(document, type=Snapshot)
    except msgspec.DecodeError as exc:
        # msgspec names the place: "Expected `int`, got `str` - at `$.tasks[0].created_ms`".
        raise InvalidArgs(f"invalid snapshot: {exc}", details={"reason": str(exc)}) from None
    check_references(doc)
    return doc


def check_references(doc: Snapshot) -> None:
    """Every agent, task, run and epic belongs to a swarm of the document; no id twice."""
    swarms = [s.id for s in doc.swarms]
    if len(set(swarms)) != len(swarms):
        raise InvalidArgs("invalid snapshot: a swarm id appears twice in $.swarms")
    known = set(swarms)
    for part in ("agents", "tasks", "runs", "epics"):
        seen: set[tuple[str, str]] = set()
        for i, item in enumerate(getattr(doc, part)):
            if item.swarm not in known:
                raise InvalidArgs(
                    f"invalid snapshot: $.{part}[{i}] belongs to swarm {item.swarm!r}, "
                    f"which is not in $.swarms ({', '.join(swarms) or 'none'})",
                    details={"field": f"$.{part}[{i}].swarm"},
                )
            if (item.swarm, item.id) in seen:
                raise InvalidArgs(f"invalid snapshot: $.{part}[{i}] repeats id {item.id!r}")
            seen.add((item.swarm, item.id))
    statuses = get_args(TaskStatus)
    for i, task in enumerate(doc.tasks):
        if task.record.get("status") not in statuses:
            raise InvalidArgs(
                f"invalid snapshot: $.tasks[{i}].record.status is "
                f"{task.record.get('status')!r}; expected one of {', '.join(statuses)}",
                details={"field": f"$.tasks[{i}].record.status"},
            )


def rename_record(record: Record, old: str, new: str) -> Record:
    """``record`` with the swarm id ``old`` replaced by ``new``: in fields whose value is
    the id, and under ``swarm`` keys inside JSON values. Unchanged values stay as they
    were, byte for byte."""
    if old == new:
        return record
    out = {}
    for key, value in record.items():
        if value == old and key in ("swarm", "id", "name"):
            out[key] = new
        elif value.startswith("{") and f'"{old}"' in value:
            out[key] = _rename_json(value, old, new)
        else:
            out[key] = value
    return out


def _rename_json(value: str, old: str, new: str) -> str:
    try:
        data = msgspec.json.decode(value)
    except msgspec.DecodeError:
        return value
    changed = False
    stack: list[Any] = [data]
    for _ in range(100_000):  # bounded walk of the JSON value
        if not stack:
            break
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("swarm") == old:
                item["swarm"] = new
                changed = True
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))
    return msgspec.json.encode(data).decode() if changed else value


def imported_agent(record: Record, now_ms: int) -> Record:
    """An agent comes back as a record only: not running, asked to stay stopped."""
    if record.get("status", "") not in LIVE_AGENT_STATUSES:
        return record  # already out of service: kept as it was
    return {**record, "status": "stopped", "gone_ms": str(now_ms), "desired": "stop",
            "load": "0", "current_task": ""}  # fmt: skip


def imported_task(record: Record) -> tuple[Record, bool]:
    """A task as imported, and whether it was in flight (then it is queued again: the
    agents that had it are not running)."""
    if record.get("status") not in IN_FLIGHT:
        return record, False
    out = dict(record)
    out["status"] = "queued"
    out["agent"] = ""
    out.pop("pending_replicas", None)
    return out, True
