"""Live updates: ONE reader of the swarms' event streams, fanned out to every open page.

The notify hub already holds cfnd's one Redis subscription and fires a pulse per swarm
when an event is appended. ``LiveFeed.run`` waits on those pulses and reads each new
page of events once (``XRANGE`` after the last id it saw), then hands every event to
the queues of the subscribers that asked for its swarm. Fifty open consoles cost the
same Redis reads as one; with no console open the feed reads nothing.

A subscriber whose queue is full (a stalled browser) is dropped; its page reconnects
and catches up from its last event id (``backlog``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import structlog

from cfn_client.wire.schema.swarm import Event
from cfn_daemon.queue.events import decode_event
from cfn_daemon.queue.notify import NotifyHub, Pulse
from cfn_daemon.store.keys import Keys
from cfn_daemon.util.aio import until_stopped

log = structlog.get_logger("cfn.web")

QUEUE_MAX = 1000  # events a subscriber may lag behind before it is dropped
PAGE = 500
RECHECK_S = 5.0  # also look now and then, in case a notification was missed


class Subscriber:
    """One open page: events of ``swarm`` (None: every swarm) arrive on ``queue``;
    None on the queue means the feed dropped it (or cfnd stops)."""

    def __init__(self, swarm: str | None, after: str | None = None) -> None:
        self.swarm = swarm
        self.after = after  # the last event the page already shows
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE_MAX + 1)
        self.closed = False

    def offer(self, ev: Event) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= QUEUE_MAX:
            self.close()
            return
        self.queue.put_nowait(ev)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class LiveFeed:
    """Reads new events once per notification and fans them out in process."""

    def __init__(
        self,
        redis: Callable[[], Any],
        keys: Keys,
        hub: NotifyHub,
        swarms: Callable[[], Awaitable[list[str]]],
    ) -> None:
        self._redis = redis
        self.keys = keys
        self.hub = hub
        self._swarms = swarms
        self._subs: set[Subscriber] = set()
        self._changed = Pulse()
        self._last: dict[str, str] = {}
        self.reads = 0  # XRANGE calls made (tests check fan-out costs no reads per client)
        # Bumped with every event read: a cached page computed before an event is stale
        # even if it is younger than its max age (a run escalated mid-computation).
        self.generation = 0

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    @contextlib.contextmanager
    def subscribe(self, swarm: str | None, after: str | None = None) -> Iterator[Subscriber]:
        """Follow ``swarm`` (None: all). A swarm nobody followed yet is read from the
        oldest ``after`` of its subscribers, so none misses an event while the feed
        starts reading it; later subscribers catch up with ``backlog``."""
        sub = Subscriber(swarm, after)
        self._subs.add(sub)
        self._changed.fire()
        try:
            yield sub
        finally:
            self._subs.discard(sub)
            sub.closed = True

    async def backlog(self, swarm: str, after_id: str, limit: int = 5000) -> list[Event]:
        """Events of ``swarm`` after the stream id ``after_id`` (a page catching up)."""
        page = await self._redis().xrange(self.keys.events(swarm), min=f"({after_id}", count=limit)
        return [decode_event(swarm, eid, fields) for eid, fields in page]

    async def run(self, stop: asyncio.Event) -> None:
        """Fan events out until ``stop``; then close every subscriber."""
        try:
            while not stop.is_set():
                waiters = [self._changed.current()]
                try:
                    wanted = await self._wanted()
                    for gone in set(self._last) - set(wanted):
                        del self._last[gone]  # read afresh from the tail when wanted again
                    waiters += [self.hub.pulses(s).events.current() for s in wanted]
                    for swarm in wanted:
                        await self._pump(swarm)
                except Exception as exc:
                    log.warning("web_live_read_failed", error=str(exc))
                await until_stopped(_first(waiters, RECHECK_S), stop)
        finally:
            for sub in list(self._subs):
                sub.close()

    async def _wanted(self) -> list[str]:
        """The swarms some subscriber follows (every swarm if one follows all)."""
        if not self._subs:
            return []
        named = {s.swarm for s in self._subs}
        if None in named:
            return await self._swarms()
        return sorted(s for s in named if s is not None)

    async def _pump(self, swarm: str) -> None:
        redis = self._redis()
        stream = self.keys.events(swarm)
        if swarm not in self._last:
            afters = [s.after for s in self._subs if s.swarm == swarm and s.after]
            if afters:
                self._last[swarm] = min(afters, key=stream_id)
            else:
                tail = await redis.xrevrange(stream, count=1)
                self._last[swarm] = tail[0][0].decode() if tail else "0-0"
                return
        for _ in range(100):  # bounded: at most 50 000 events per wake-up
            page = await redis.xrange(stream, min=f"({self._last[swarm]}", count=PAGE)
            self.reads += 1
            for eid, fields in page:
                ev = decode_event(swarm, eid, fields)
                self._last[swarm] = ev.id
                self.generation += 1
                for sub in list(self._subs):
                    if sub.swarm is None or sub.swarm == swarm:
                        sub.offer(ev)
            if len(page) < PAGE:
                return


def stream_id(eid: str) -> tuple[int, int]:
    """A Redis stream id ``ms-seq`` as a comparable pair."""
    ms, _, seq = eid.partition("-")
    return int(ms), int(seq or 0)


async def _first(events: list[asyncio.Event], timeout_s: float) -> None:
    """Return when any of ``events`` is set, or after ``timeout_s``."""
    tasks = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(tasks, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
