"""One supervision policy for every background loop of cfnd and cfn-agent.

A background child (a swarm's dispatcher, an agent's heartbeat loop …) that
raises is logged, counted and started again after a capped exponential backoff,
as systemd's ``Restart=`` and Kubernetes' CrashLoopBackOff do: the budget is a
rate, never a permanent stop. A store outage is not a crash: the child waits
for Redis to come back and starts again at once. Only cancellation, a normal
return, or a :class:`Fatal` error end the loop.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from cfn_daemon.util.aio import until_stopped

log = structlog.get_logger("cfn.restart")


class Fatal(Exception):
    """Raised by a child whose failure must end the process (a fatal config error)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff; a child that ran ``healthy_s`` starts over at ``base_s``."""

    base_s: float = 0.2
    max_s: float = 30.0
    healthy_s: float = 60.0

    def delay_s(self, failures: int) -> float:
        """Delay before restart number ``failures`` (1-based)."""
        return float(min(self.max_s, self.base_s * 2 ** max(0, failures - 1)))


@dataclass
class Restarts:
    """Per-child failure counts of one process, for status output and tests."""

    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    last_error: dict[str, str] = field(default_factory=dict)
    # Tests and status wait on this: set (and replaced) whenever any child fails.
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, name: str, error: str) -> None:
        self.counts[name] += 1
        self.last_error[name] = error
        self.changed.set()
        self.changed = asyncio.Event()

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


WaitAvailable = Callable[[], Awaitable[None]]


def _never(exc: BaseException) -> bool:
    return False


@dataclass
class Keeper:
    """How one process restarts its background children.

    ``is_outage`` tells a store outage from a crash; after one, ``wait_available``
    (the store's, in cfnd) is awaited instead of the backoff, so a child never
    spins against a Redis that is down. The agent, which has no health loop, leaves
    it unset and backs off.
    """

    restarts: Restarts = field(default_factory=Restarts)
    is_outage: Callable[[BaseException], bool] = _never
    wait_available: WaitAvailable | None = None
    backoff: Backoff = Backoff()

    async def run(
        self,
        name: str,
        body: Callable[[], Awaitable[None]],
        stop: asyncio.Event,
        **context: object,
    ) -> None:
        """Run ``body()`` until it returns or ``stop`` is set, restarting it when it raises.

        ``context`` is added to the log events (swarm=…, agent=…).
        """
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                await body()
                return
            except (Fatal, asyncio.CancelledError):
                raise
            except Exception as exc:
                if time.monotonic() - started >= self.backoff.healthy_s:
                    failures = 0
                failures += 1
                error = f"{type(exc).__name__}: {exc}"
                self.restarts.record(name, error)
                if self.is_outage(exc):
                    log.warning("child_store_unavailable", child=name, error=error, **context)
                    if self.wait_available is not None:
                        if not await until_stopped(self.wait_available(), stop):
                            return
                        continue
                else:
                    log.exception("child_failed", child=name, failures=failures, **context)
                delay_s = self.backoff.delay_s(failures)
                log.info("child_restarting", child=name, in_s=round(delay_s, 2), **context)
                if not await until_stopped(asyncio.sleep(delay_s), stop):
                    return
