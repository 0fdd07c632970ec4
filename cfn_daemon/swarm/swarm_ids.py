"""The ids of the swarms set, cached for resolving each request's swarm.

Every request used to read the whole set (SMEMBERS) to resolve its swarm: py-spy put it
at 8% of cfnd's request handling on the no-op path. The cache is dropped whenever it
may be stale: when this cfnd adds or removes a swarm, when any cfnd sharing the Redis
announces a change (``swarms`` on that swarm's notify channel, see ``announce``), and
whenever the notify subscription is (re)made, since a change may have gone unheard. It
is only used while the subscription is up; otherwise every call reads Redis.
"""

from __future__ import annotations

from typing import Any

from cfn_daemon.queue.notify import SWARMS_CHANGED, NotifyHub
from cfn_daemon.store.keys import Keys


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SwarmIds:
    """Sorted swarm ids, from memory while they cannot have changed unheard."""

    def __init__(self, redis: Any, keys: Keys, hub: NotifyHub) -> None:
        self.redis = redis
        self.keys = keys
        self.hub = hub
        self._ids: list[str] | None = None
        self._generation = 0  # bumped by every invalidation: a read racing one is not kept
        hub.on_swarms_changed(self.invalidate)

    def invalidate(self) -> None:
        self._ids = None
        self._generation += 1

    async def get(self, *, fresh: bool = False) -> list[str]:
        """The ids (a copy); ``fresh``: read from Redis whatever the cache holds."""
        if self._ids is not None and not fresh and self.hub.subscribed.is_set():
            return list(self._ids)
        generation = self._generation
        ids = sorted(_text(s) for s in await self.redis.smembers(self.keys.swarms))
        if generation == self._generation and self.hub.subscribed.is_set():
            self._ids = ids
        return list(ids)

    async def announce(self, swarm: str) -> None:
        """``swarm`` was added to or removed from the set: tell every cfnd (this one too)."""
        self.invalidate()
        await self.redis.publish(self.keys.notify(swarm), SWARMS_CHANGED)
