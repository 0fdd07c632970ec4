"""Swarm events: each swarm's bounded stream ``cfn:{s}:events`` (history), announced on
``cfn:{s}:notify`` (see ``queue.notify`` for the in-process fan-out).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import structlog

from cfn_client.wire.schema.swarm import Event
from cfn_daemon.queue.notify import NotifyHub
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.store.keys import EVENTS_MAXLEN, Keys
from cfn_daemon.util.aio import until_stopped

log = structlog.get_logger("cfn.events")
_json = msgspec.json.Encoder()


async def emit(redis: Any, keys: Keys, swarm: str, etype: str, data: dict[str, Any]) -> None:
    """Append an event and announce it (for changes not already made by a Lua script)."""
    async with redis.pipeline(transaction=True) as pipe:
        queue_events(pipe, keys, swarm, [(etype, data)])
        await pipe.execute()


def queue_events(
    pipe: Any, keys: Keys, swarm: str, items: list[tuple[str, dict[str, Any]]]
) -> None:
    """Queue events (and one announcement) on ``pipe``: in a MULTI they are written
    together with the state change they describe, or not at all."""
    if not items:
        return
    ts = now_ms()
    for etype, data in items:
        pipe.xadd(
            keys.events(swarm),
            {"type": etype, "ts": ts, "data": _json.encode(data)},
            maxlen=EVENTS_MAXLEN,
            approximate=True,
        )
    pipe.publish(keys.notify(swarm), "ev")


def decode_event(swarm: str, entry_id: Any, fields: dict[bytes, bytes]) -> Event:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return Event(
        id=eid,
        ts_ms=int(fields.get(b"ts", b"0")),
        swarm=swarm,
        type=fields.get(b"type", b"").decode(),
        data=msgspec.json.decode(fields.get(b"data", b"{}")),
    )


def _matches(event: Event, types: list[str]) -> bool:
    return not types or any(event.type == t or event.type.startswith(t + ".") for t in types)


async def history(
    redis: Any, keys: Keys, swarm: str, *, since_ms: int | None, types: list[str], limit: int
) -> list[Event]:
    """The last ``limit`` matching events (oldest first), optionally since a time."""
    start = f"{since_ms}-0" if since_ms is not None else "-"
    out: list[Event] = []
    # Walk backwards in pages so a type filter still finds `limit` events.
    end = "+"
    for _ in range(100):
        page = await redis.xrevrange(keys.events(swarm), max=end, min=start, count=500)
        for eid, fields in page:
            ev = decode_event(swarm, eid, fields)
            if _matches(ev, types):
                out.append(ev)
                if len(out) >= limit:
                    return out[::-1]
        if len(page) < 500:
            break
        last = page[-1][0].decode()
        ms, seq = last.split("-")
        end = f"({ms}-{seq}"
    return out[::-1]


async def follow(
    redis: Any,
    keys: Keys,
    hub: NotifyHub,
    swarm: str,
    *,
    since_ms: int | None,
    types: list[str],
    stop: asyncio.Event,
    after_id: str | None = None,
) -> AsyncIterator[Event]:
    """History since ``since_ms`` (or after the entry ``after_id``; else nothing), then
    live events until ``stop`` or until the swarm is destroyed."""
    last = after_id or (f"{since_ms}-0" if since_ms is not None else "$")
    if last == "$":
        tail = await redis.xrevrange(keys.events(swarm), count=1)
        last = tail[0][0].decode() if tail else "0-0"
    pulse = hub.pulses(swarm).events
    while not stop.is_set():
        waiter = pulse.current()
        page = await redis.xrange(keys.events(swarm), min=f"({last}", count=500)
        for eid, fields in page:
            ev = decode_event(swarm, eid, fields)
            last = ev.id
            if _matches(ev, types):
                yield ev
        if len(page) < 500:
            if not page and not await redis.sismember(keys.swarms, swarm):
                return  # the swarm was destroyed: nothing more will come
            # Wait for the next announcement; re-check now and then in case one was missed.
            await until_stopped(asyncio.wait_for(waiter.wait(), 5.0), stop)
