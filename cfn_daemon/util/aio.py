"""Small asyncio helpers shared by the daemon and the agent runtime."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def until_stopped(aw: Awaitable[Any], stop: asyncio.Event) -> bool:
    """Await ``aw`` unless ``stop`` fires first; True when ``aw`` finished."""
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, stopper):
            if not t.done():
                t.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
    return task in done and not task.cancelled()
