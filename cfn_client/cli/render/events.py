"""Human output for events (tables and one-line follows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cfn_client.cli.render.common import CELL_WIDTH, format_time, format_value, shorten, table
from cfn_client.wire.schema.swarm import (
    Event,
)

# --------------------------------------------------------------------------- events

EVENT_TYPE_WIDTH = 18


def event_data(data: Mapping[str, Any]) -> str:
    """An event's data as ``key=value`` pairs, long values cut."""
    return " ".join(f"{k}={shorten(format_value(v), CELL_WIDTH)}" for k, v in data.items())


def events_table(events: Sequence[Event]) -> str:
    """``cfnctl events``."""
    if not events:
        return "no events"
    rows = [[format_time(e.ts_ms), e.type, event_data(e.data)] for e in events]
    return table(["TIME", "TYPE", "DATA"], rows)


def event_line(event: Event) -> str:
    """One followed event (no table: columns cannot be sized ahead of a stream)."""
    line = f"{format_time(event.ts_ms)}  {event.type.ljust(EVENT_TYPE_WIDTH)}  "
    return (line + event_data(event.data)).rstrip()
