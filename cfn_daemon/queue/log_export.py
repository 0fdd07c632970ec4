"""``logs.export``: pages of every swarm's event stream and of the audit stream, read
with XRANGE between ID bounds from the time range, in bounded chunks."""

from __future__ import annotations

from typing import Any

from cfn_client.wire.schema.logs import LogEntry, LogsExportArgs, LogsPage
from cfn_daemon.core.log_entries import Cursor, decode_cursor, from_audit, from_event
from cfn_daemon.queue.events import decode_event
from cfn_daemon.store.keys import Keys

#: Entries per XRANGE (each call stays short; a page makes a few of them).
READ_CHUNK = 500
#: XRANGE calls per page at most (a filtered audit stream may match little).
MAX_READS = 200


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _streams(args: LogsExportArgs, swarms: list[str]) -> list[Cursor]:
    """The streams to read, in export order: the audit stream, the daemon's own events
    (alerts; swarm "", so only without --swarm), then each swarm's events."""
    out = []
    if "audit" in args.sources:
        out.append(Cursor("audit", "", ""))
    if "event" in args.sources:
        if args.swarm is None:
            out.append(Cursor("event", "", ""))
        out += [Cursor("event", s, "") for s in sorted(swarms)]
    return out


async def export_page(
    redis: Any, keys: Keys, args: LogsExportArgs, swarms: list[str], budget_bytes: int
) -> LogsPage:
    """One page of at most ``args.limit`` entries and about ``budget_bytes`` of data."""
    streams = _streams(args, swarms)
    at = 0
    last = ""
    if args.cursor is not None:
        cur = decode_cursor(args.cursor)
        # Resume in the cursor's stream, or in the first one after it (a swarm may
        # have gone since the last page).
        order = [(c.source != "audit", c.swarm) for c in streams]
        key = (cur.source != "audit", cur.swarm)
        at = next((i for i, k in enumerate(order) if k >= key), len(streams))
        if at < len(streams) and order[at] == key:
            last = cur.last_id
    start = f"{args.since_ms}" if args.since_ms is not None else "-"
    end = f"{args.until_ms}" if args.until_ms is not None else "+"
    entries: list[LogEntry] = []
    size = 0
    for _ in range(MAX_READS):
        if at >= len(streams) or len(entries) >= args.limit or size >= budget_bytes:
            break
        stream = streams[at]
        if stream.source == "audit":
            stream_key = keys.audit
        else:
            stream_key = keys.events(stream.swarm) if stream.swarm else keys.daemon_events
        want = min(READ_CHUNK, args.limit - len(entries))
        low = f"({last}" if last else start
        page = await redis.xrange(stream_key, min=low, max=end, count=want)
        for eid, raw in page:
            entry_id = _text(eid)
            last = entry_id
            if stream.source == "audit":
                entry = from_audit(entry_id, {_text(k): _text(v) for k, v in raw.items()})
                if args.swarm is not None and entry.swarm != args.swarm:
                    continue  # with --swarm: the audit entries that name it
            else:
                entry = from_event(decode_event(stream.swarm, eid, raw))
            entries.append(entry)
            size += sum(len(k) + len(v) for k, v in raw.items())
        if len(page) < want:  # this stream is done: on to the next
            at += 1
            last = ""
    if at >= len(streams):
        return LogsPage(entries=entries)
    here = streams[at]
    return LogsPage(entries=entries, next_cursor=Cursor(here.source, here.swarm, last).encode())
