"""The Python API of cfnd: every op as a method, results as typed Structs.

    from cfn_client.api import AsyncClient, Client
    with Client() as cfn:
        print(cfn.status().store.mode)

    async with AsyncClient() as cfn:          # asyncio or trio
        results = await cfn.ping()

    with Client() as cfn, cfn.events_follow(types=["task.failed"]) as events:
        for event in events:                  # typed ``Event``s until cfnd ends the stream
            print(event.data)

    with Client() as cfn:                     # a CFN loop run, followed to its end
        run = cfn.loop_start("add a --dry-run flag", max_loop2=3)
        with cfn.loop_follow(run.id) as events:
            for event in events:              # loop.implementer_done, loop.vote, ...
                print(event.type, event.data)
        print(cfn.loop_status(run.id).status)

Arguments are checked against the op's schema before anything is sent, so a typo
fails locally with ``InvalidArgs`` naming the field. Adding an op is one method in
``api/async_.py`` (``return await self._op("name", NameResult, **args)``), then
``python -m cfn_client.api.generate`` writes the blocking twin into ``api/sync.py``.
Importing this package never loads anyio; the async client does on connect. Each
name is imported on first use (``Client`` alone never loads the async client).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cfn_client.api.async_ import AsyncClient
    from cfn_client.api.async_transport import AsyncEventFollow
    from cfn_client.api.base import build_args, decode_result, wait_request_timeout
    from cfn_client.api.sync import Client
    from cfn_client.api.sync_transport import EventFollow

__all__ = [
    "AsyncClient",
    "AsyncEventFollow",
    "Client",
    "EventFollow",
    "build_args",
    "decode_result",
    "wait_request_timeout",
]

# Each name's module, imported on first use: ``cfnctl`` (which imports ``api.sync``)
# never pays for the async client.
_HOMES = {
    "AsyncClient": "cfn_client.api.async_",
    "AsyncEventFollow": "cfn_client.api.async_transport",
    "Client": "cfn_client.api.sync",
    "EventFollow": "cfn_client.api.sync_transport",
    "build_args": "cfn_client.api.base",
    "decode_result": "cfn_client.api.base",
    "wait_request_timeout": "cfn_client.api.base",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
