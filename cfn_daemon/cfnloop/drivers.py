"""A pool of long-running per-object drivers (one per CFN run, one per epic).

All drivers are children of one task group; each object gets at most one driver;
on start the pool first resumes the objects found in Redis, so a restarted cfnd
picks up every unfinished run and epic.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import structlog

from cfn_daemon.store.client import is_outage
from cfn_daemon.util.aio import until_stopped
from cfn_daemon.util.restart import Keeper

log = structlog.get_logger("cfn.drivers")


class DriverPool:
    """Named driver tasks in one task group; ``stop`` ends them all."""

    def __init__(self, kind: str, keeper: Keeper | None = None) -> None:
        self.kind = kind
        # A driver (or the resume) that raises is restarted, never ends the pool.
        self.keeper = keeper or Keeper()
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._running: dict[str, asyncio.Task[None]] = {}

    async def run(
        self, stop: asyncio.Event, after: asyncio.Event, resume: Callable[[], Awaitable[None]]
    ) -> None:
        """Once ``after`` is set, ``resume()``, then keep the drivers until ``stop``."""
        self.stop = stop
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            if await until_stopped(after.wait(), stop):
                # Until it succeeds: an unfinished run left unresumed would hang.
                await self.keeper.run(f"{self.kind}-resume", resume, stop)
                self.ready.set()
                await stop.wait()
        self._tg = None

    @contextlib.asynccontextmanager
    async def skip_broken(self, kind: str, name: str) -> AsyncIterator[None]:
        """Resume one object: a broken record is logged and skipped (the others
        still resume); a store outage propagates, so the keeper retries the resume."""
        try:
            yield
        except Exception as exc:
            if is_outage(exc):
                raise
            log.exception("resume_skipped", kind=kind, name=name)

    def start(self, name: str, driver: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start ``driver()`` for ``name`` unless one already runs (or the pool stopped)."""
        if name in self._running or self._tg is None:
            return
        task = self._tg.create_task(
            self.keeper.run(f"{self.kind}-{name}", driver, self.stop, **{self.kind: name}),
            name=f"{self.kind}-{name}",
        )
        self._running[name] = task
        task.add_done_callback(lambda _: self._running.pop(name, None))

    def driver(self, name: str) -> asyncio.Task[None] | None:
        """The running driver of ``name`` (None once it ended)."""
        return self._running.get(name)
