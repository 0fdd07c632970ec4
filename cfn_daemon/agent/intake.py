"""What an agent reads next: its own work stream (tasks cfnd assigned to it) and its
type's direct streams (queue/direct.py), as consumer ``<agent id>`` of group ``agent``.

Its own pending entries come first (after a restart, and after a failed read: a reply
lost on the wire left its entries delivered to us but never seen), one stream at a
time from ``0``; then new ones, from every stream in one blocking XREADGROUP. That
read may return up to ``count`` entries from each stream: what is beyond the free
slots is given back — a direct entry as a new entry on its stream (for any agent of
the type), an entry of our own work stream by reading our pending list again.
"""

from __future__ import annotations

import time
from typing import Any

from cfn_daemon.store.keys import AGENT_GROUP

READ_BLOCK_MS = 1000
PENDING_RESCAN_S = 30.0  # re-read our own pending entries this often


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Intake:
    """The reads of one agent; ``streams[0]`` is its own work stream, then its type's
    direct streams, highest priority first."""

    def __init__(self, redis: Any, consumer: str, streams: list[str]) -> None:
        self.redis = redis
        self.consumer = consumer
        self.streams = streams
        self._rank = {s: i for i, s in enumerate(streams)}
        self._pending: dict[str, str] = {}
        self._scanned = 0.0
        self.rescan()

    def rescan(self) -> None:
        """Read our own pending entries again, from the start of each stream."""
        self._pending = dict.fromkeys(self.streams, "0")

    async def read(self, free: int) -> list[tuple[str, str, str]]:
        """Up to ``free`` entries as (stream, entry id, task id); [] when none came.

        Pending entries may name tasks already running here: the caller skips those.
        """
        free = max(1, free)
        # Also now and then: redis-py retries a read whose reply timed out, and the
        # retry returns newer entries; the lost reply's stay in our pending list.
        if not self._pending and time.monotonic() - self._scanned >= PENDING_RESCAN_S:
            self.rescan()
        if self._pending:
            return await self._read_pending(free)
        reply = await self.redis.xreadgroup(
            AGENT_GROUP,
            self.consumer,
            dict.fromkeys(self.streams, ">"),
            count=free,
            block=READ_BLOCK_MS,
        )
        got = sorted(
            (
                (_text(stream), _text(eid), _text(fields[b"t"]))
                for stream, entries in (reply or [])
                for eid, fields in entries
                if fields
            ),
            key=lambda e: self._rank.get(e[0], len(self._rank)),
        )
        if len(got) > free:
            await self._give_back(got[free:])
        return got[:free]

    async def _read_pending(self, free: int) -> list[tuple[str, str, str]]:
        stream, cursor = next(iter(self._pending.items()))
        reply = await self.redis.xreadgroup(
            AGENT_GROUP, self.consumer, {stream: cursor}, count=free
        )
        entries = reply[0][1] if reply else []
        if not entries:
            del self._pending[stream]
            if not self._pending:
                self._scanned = time.monotonic()
            return []
        self._pending[stream] = _text(entries[-1][0])
        # A pending entry deleted meanwhile comes back without fields.
        return [(stream, _text(eid), _text(f[b"t"])) for eid, f in entries if f]

    async def _give_back(self, surplus: list[tuple[str, str, str]]) -> None:
        own = self.streams[0]
        async with self.redis.pipeline(transaction=True) as pipe:
            for stream, eid, tid in surplus:
                if stream == own:
                    continue  # assigned to us: it stays in our pending list
                pipe.xadd(stream, {"t": tid})
                pipe.xack(stream, AGENT_GROUP, eid)
                pipe.xdel(stream, eid)
            await pipe.execute()
        if any(stream == own for stream, _, _ in surplus):
            self._pending.setdefault(own, "0")
