"""The async client's transport: one shared ``AsyncConnection``, follows on their own."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from cfn_client.api.base import ClientBase, R, build_args, decode_result
from cfn_client.conn.base import DEFAULT_TIMEOUT_S
from cfn_client.wire.errors import CfnError
from cfn_client.wire.protocol import Args, HelloResult
from cfn_client.wire.schema.swarm import Event

if TYPE_CHECKING:
    # Imported on first use: a script that only uses the blocking client never loads anyio.
    from cfn_client.conn.async_ import AsyncConnection, AsyncEventStream

__all__ = ["AsyncEventFollow", "AsyncTransport"]


class AsyncEventFollow:
    """``events.follow`` (or ``op``, another stream of Events) on an async client, over a
    connection of its own.

    ``async with cfn.events_follow() as events: async for event in events: ...``.
    The dedicated connection is closed on exit, so cfnd stops sending even when the
    caller leaves early; the client's shared connection is never tied up.
    """

    def __init__(
        self,
        socket_path: Path,
        timeout_s: float,
        args: Args | dict[str, Any],
        op: str = "events.follow",
    ) -> None:
        self._socket_path = socket_path
        self._timeout_s = timeout_s
        self._args = args
        self._op = op
        self._stack: AsyncExitStack | None = None
        self._raw: AsyncEventStream | None = None

    async def __aenter__(self) -> Self:
        from cfn_client.conn.async_ import AsyncConnection

        stack = AsyncExitStack()
        try:
            conn = await stack.enter_async_context(
                AsyncConnection(self._socket_path, timeout_s=self._timeout_s)
            )
            raw = conn.stream(self._op, self._args, math.inf)
            self._raw = await stack.enter_async_context(raw)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self._raw is None:
            raise CfnError("enter the follow (`async with ... as events`) before iterating")
        event: Event = decode_result(self._op, await self._raw.__anext__(), Event)
        return event


class AsyncTransport(ClientBase):
    """The async client's connection handling (the ops are in ``api.async_``).

    Async client (anyio: asyncio or trio); many tasks may share it concurrently.

    Use it as ``async with AsyncClient() as cfn``: the connection's reader task
    lives in that context.
    """

    def __init__(
        self, socket_path: str | Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        super().__init__(socket_path, timeout_s)
        self._conn: AsyncConnection | None = None

    async def connect(self) -> HelloResult:
        """Connect and return the handshake; pair with ``close()`` in the same task."""
        from cfn_client.conn.async_ import AsyncConnection

        if self._conn is not None:
            raise CfnError("already connected")
        conn = AsyncConnection(self.socket_path, timeout_s=self.timeout_s)
        hello = await conn.connect()
        self._conn = conn
        return hello

    async def close(self) -> None:
        """Close the connection, failing requests still in flight."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def call(self, op: str, /, **args: Any) -> Any:
        """Run any op; known ops return their Result Struct, others the raw result."""
        raw = await self._connection().request(op, build_args(op, args))
        return decode_result(op, raw)

    def stream(
        self, op: str, args: Mapping[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> AsyncEventStream:
        """``async with cfn.stream(op, args) as events: async for event in events: ...``."""
        return self._connection().stream(op, build_args(op, args or {}), timeout_s)

    async def hello(self) -> HelloResult:
        """The daemon's handshake: its version, pid, and who it thinks we are (user, role)."""
        server = self._connection().server
        assert server is not None  # set by connect()
        return server

    # -- internals

    async def _op(self, op: str, result_type: type[R], /, **args: Any) -> R:
        return await self._call(op, result_type, args)

    async def _pause(self, seconds: float) -> None:
        import anyio

        await anyio.sleep(seconds)

    async def _call(
        self, op: str, result_type: type[R], args: dict[str, Any], timeout_s: float | None = None
    ) -> R:
        raw = await self._connection().request(op, build_args(op, args), timeout_s)
        out: R = decode_result(op, raw, result_type)
        return out

    def _connection(self) -> AsyncConnection:
        if self._conn is None:
            raise CfnError("AsyncClient is not connected: use `async with AsyncClient() as cfn`")
        return self._conn

    def _follow(self, op: str, args: Args | dict[str, Any]) -> AsyncEventFollow:
        # A connection of its own, closed on exit: the shared one is never tied up.
        return AsyncEventFollow(self.socket_path, self.timeout_s, args, op=op)
