"""In-process wake-ups from Redis notifications.

Changes are announced on ``cfn:{s}:notify``. cfnd holds ONE pattern subscription for
every swarm and fans the notifications out in process (like saq's multiplexer): the
dispatcher wakes on ``queued``/``agent``, waiters on ``done:<task>``, followers on
``ev``, the swarm-id cache on ``swarms``. One message may carry several of these
words, space-separated (a Lua script announces all it changed with one PUBLISH). A
lost subscription wakes everybody on reconnect so nobody waits on a notification that
was missed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import structlog

from cfn_daemon.store import Store
from cfn_daemon.util.aio import until_stopped

log = structlog.get_logger("cfn.events")
_SWARM = re.compile(rb"\{([^}]*)\}:notify$")
SWARMS_CHANGED = "swarms"  # a swarm was created or destroyed (the swarms set changed)
ALL_DONE = 1 << 40  # added to done_count when notifications may have been missed


class Pulse:
    """A re-armable broadcast: take ``current()`` before checking state, then wait on it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


class WorkNews:
    """What the ``work`` notifications said since the dispatcher last took them."""

    def __init__(self, *, everything: bool = False) -> None:
        self.queued = everything  # a task was queued: read the queues
        self.agents_changed = everything  # an agent joined, left or changed: re-read them
        # An agent's load and status as a completion left them (``cap:<id>:<load>:<st>``).
        self.capacity: dict[str, tuple[int, str]] = {}

    def everything(self) -> WorkNews:
        """As if every kind of news had come (a lost subscription, a safety recheck)."""
        self.queued = self.agents_changed = True
        return self


class SwarmPulses:
    def __init__(self) -> None:
        self.work = Pulse()  # a task was queued or an agent's capacity changed
        self.done = Pulse()  # some task reached a final state
        self.events = Pulse()  # a new event was appended
        self._news = WorkNews(everything=True)
        # Tasks announced finished so far (``done:`` words). A lost subscription adds
        # ALL_DONE: whoever counts on it looks again, as if every task had finished.
        self.done_count = 0

    def take_news(self) -> WorkNews:
        """The work news gathered since the last call (the first call: everything)."""
        news, self._news = self._news, WorkNews()
        return news


class NotifyHub:
    """One pattern subscription fanned out to per-swarm pulses."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._swarms: dict[str, SwarmPulses] = {}
        self._swarms_changed: list[Callable[[], None]] = []
        self.subscribed = asyncio.Event()

    def on_swarms_changed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the swarms set may have changed (also on reconnect)."""
        self._swarms_changed.append(callback)

    def pulses(self, swarm: str) -> SwarmPulses:
        if swarm not in self._swarms:
            self._swarms[swarm] = SwarmPulses()
        return self._swarms[swarm]

    def wake_all(self) -> None:
        for callback in self._swarms_changed:
            callback()
        for p in self._swarms.values():
            p._news.everything()
            p.done_count += ALL_DONE
            p.work.fire()
            p.done.fire()
            p.events.fire()

    def dispatch(self, channel: bytes, data: bytes) -> None:
        m = _SWARM.search(channel)
        if not m:
            return
        words = data.split()
        if words == [b"swarms"]:
            for callback in self._swarms_changed:
                callback()
            return
        p = self.pulses(m.group(1).decode())
        done = events = work = False
        for word in words:
            if word == b"ev":
                events = True
            elif word.startswith(b"done:"):
                done = True
                p.done_count += 1
            elif word == b"swarms":
                for callback in self._swarms_changed:
                    callback()
            else:
                work = True
                self._note_work(p, word)
        # Each pulse once per message, however many words asked for it.
        if events:
            p.events.fire()
        if done:
            p.done.fire()
        if work:
            p.work.fire()

    @staticmethod
    def _note_work(p: SwarmPulses, word: bytes) -> None:
        news = p._news
        if word == b"queued":
            news.queued = True
        elif word == b"agent":
            news.agents_changed = True
        elif word.startswith(b"cap:"):
            try:
                agent, load, status = word[4:].decode().rsplit(":", 2)
                news.capacity[agent] = (int(load), status)
            except ValueError:
                news.agents_changed = True
        else:  # a word this cfnd does not know (a newer cfnd's): assume the most
            news.everything()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the subscription alive until ``stop``; reconnect with backoff."""
        delay = 0.1
        while not stop.is_set():
            if not await until_stopped(self.store.wait_available(), stop):
                return
            pubsub = self.store.redis.pubsub()
            try:
                await pubsub.psubscribe(self.store.keys.notify_pattern)
                self.subscribed.set()
                self.wake_all()  # anything announced while we were not listening
                delay = 0.1
                while not stop.is_set():
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg and msg["type"] == "pmessage":
                        self.dispatch(msg["channel"], msg["data"])
            except Exception as exc:
                log.warning("notify_subscription_lost", error=str(exc), retry_in_s=delay)
                self.subscribed.clear()
                await until_stopped(asyncio.sleep(delay), stop)
                delay = min(delay * 2, 5.0)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except Exception as exc:
                    log.debug("pubsub_close_failed", error=str(exc))
