"""Test-mode swarms (`swarm init --test-mode [--ttl 30m]`): ephemeral, and reaped.

An ephemeral swarm is destroyed
- when the cfnd that created it stops cleanly;
- once it outlives its TTL (``expires_at_ms``), by whichever cfnd on the Redis sees it;
- when a cfnd starts on its creator's state dir: the state-dir lock proves the creator
  is gone (killed, crashed), so nobody will ever stop it cleanly.

The decisions are pure functions; ``Reaper`` is the bounded loop around them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import structlog

from cfn_client.wire.schema.swarm import SwarmInfo
from cfn_daemon.queue.agents import host_name
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.util.aio import until_stopped

log = structlog.get_logger("cfn.swarm")

#: The reaper looks at least this often (a TTL set by another cfnd on the same Redis).
MAX_WAKE_S = 5.0
MIN_WAKE_S = 0.05


def creator_id(state_dir: Path) -> str:
    """Who created a swarm: this host and cfnd's state dir (one cfnd holds it at a time)."""
    return f"{host_name()}:{state_dir.absolute()}"


def expired(info: SwarmInfo, now: int) -> bool:
    """An ephemeral swarm past its TTL."""
    return info.ephemeral and 0 < info.expires_at_ms <= now


def stale_at_start(info: SwarmInfo, me: str, now: int) -> bool:
    """At start-up: expired, or created by this state dir's previous cfnd (which died:
    this one holds the state-dir lock now)."""
    return info.ephemeral and (expired(info, now) or info.creator == me)


def own(infos: Iterable[SwarmInfo], me: str) -> list[str]:
    """The ephemeral swarms this cfnd created: destroyed when it stops cleanly."""
    return [i.id for i in infos if i.ephemeral and i.creator == me]


def next_wake_s(infos: Iterable[SwarmInfo], now: int) -> float:
    """Seconds until the earliest TTL among ``infos`` ends (at most ``MAX_WAKE_S``)."""
    ends = [i.expires_at_ms for i in infos if i.ephemeral and i.expires_at_ms > 0]
    if not ends:
        return MAX_WAKE_S
    return min(MAX_WAKE_S, max(MIN_WAKE_S, (min(ends) - now) / 1000))


class Reaper:
    """Destroys ephemeral swarms whose TTL ended, as soon as it ends. ``swarms``: the
    swarms this cfnd runs (in memory: no Redis reads while nothing expires)."""

    def __init__(
        self,
        swarms: Callable[[], list[SwarmInfo]],
        destroy: Callable[[str], Awaitable[object]],
    ) -> None:
        self._swarms = swarms
        self._destroy = destroy
        self.wake = asyncio.Event()  # set when a new ephemeral swarm may end sooner

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: destroy expired swarms, then sleep until the next TTL ends."""
        while not stop.is_set():
            infos = self._swarms()
            now = now_ms()
            for info in infos:
                if expired(info, now) and info.status == "active":
                    log.info("swarm_expired", swarm=info.id, expires_at_ms=info.expires_at_ms)
                    await self._destroy(info.id)
            self.wake.clear()
            pause = next_wake_s([i for i in infos if not expired(i, now)], now_ms())
            waker = asyncio.ensure_future(self.wake.wait())
            try:
                await until_stopped(asyncio.wait({waker}, timeout=pause), stop)
            finally:
                waker.cancel()
