"""``--format csv``: a list-like result as RFC 4180 CSV (one header row, CRLF lines)."""

from __future__ import annotations

import csv
import io
from typing import Any

import msgspec

from cfn_client.cli.render.common import to_json

__all__ = ["to_csv"]


def _rows(doc: Any) -> list[dict[str, Any]] | None:
    """The records a result lists: a list itself, or its one (else first) list field."""
    if isinstance(doc, list):
        return [r if isinstance(r, dict) else {"value": r} for r in doc]
    if not isinstance(doc, dict):
        return None
    lists = [v for v in doc.values() if isinstance(v, list) and all(isinstance(r, dict) for r in v)]
    if not lists:
        return None
    return lists[0] if len(lists) == 1 else max(lists, key=len)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return to_json(value)  # nested lists and records: one JSON cell


def to_csv(result: Any) -> str | None:
    """``result``'s records as CSV, or None when it lists nothing (print it for people)."""
    rows = _rows(msgspec.to_builtins(result, str_keys=True))
    if rows is None:
        return None
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(_cell(row.get(c)) for c in columns)
    return out.getvalue()
