"""The Python API of cfnd: every op as a method, results as typed Structs.

    from cfn_client.api import Client
    with Client() as cfn:
        print(cfn.status().store.mode)

    async with AsyncClient() as cfn:          # asyncio or trio
        results = await cfn.ping()

Arguments are checked against the op's schema before anything is sent, so a
typo fails locally with ``InvalidArgs`` naming the field. Adding an op is one
method per class: ``return self._op("name", NameResult, **args)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import msgspec

from cfn_client.connection import DEFAULT_TIMEOUT_S, SyncConnection, SyncEventStream
from cfn_client.errors import CfnError, ProtocolError
from cfn_client.paths import default_socket_path
from cfn_client.protocol import (
    OPS,
    Args,
    ConfigResetResult,
    ConfigSetResult,
    ConfigShowResult,
    ConfigValidateResult,
    DoctorResult,
    HelloResult,
    PingResult,
    Result,
    StatusResult,
    decode_args,
)

if TYPE_CHECKING:
    # Imported lazily at run time: scripts using only Client (and cfnctl) never load anyio.
    from cfn_client.async_connection import AsyncConnection, AsyncEventStream

R = TypeVar("R", bound=Result)

__all__ = ["AsyncClient", "Client", "build_args", "decode_result"]


def build_args(op: str, args: Mapping[str, Any]) -> Args | dict[str, Any]:
    """Validate ``args`` against a known op's schema; unknown ops pass through unchanged."""
    spec = OPS.get(op)
    if spec is None:
        return dict(args)
    return decode_args(spec.args, dict(args))


def decode_result(op: str, raw: Any, result_type: type[R] | None = None) -> Any:
    """Convert a raw result into the op's Result Struct (raw for ops this client doesn't know)."""
    target: type[Result] | None = result_type or (OPS[op].result if op in OPS else None)
    if target is None:
        return raw
    try:
        return msgspec.convert(raw, target)
    except msgspec.ValidationError as exc:
        raise ProtocolError(
            f"cfnd answered {op!r} with a result this client cannot read ({exc}); "
            "is cfnctl older than the daemon?",
            details={"op": op},
        ) from None


class _ClientBase:
    def __init__(
        self, socket_path: str | Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.socket_path = Path(socket_path) if socket_path is not None else default_socket_path()
        self.timeout_s = timeout_s


class Client(_ClientBase):
    """Blocking client. Connects on first use (or on ``with``); reconnects if the link dropped.

    A request that failed because the daemon went away is never re-sent: only the
    next call opens a new connection. Not thread-safe: use one Client per thread.
    """

    def __init__(
        self, socket_path: str | Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        super().__init__(socket_path, timeout_s)
        self._conn: SyncConnection | None = None

    def connect(self) -> HelloResult:
        """Connect now (instead of on first use) and return the handshake."""
        return self._connection_hello()

    def close(self) -> None:
        """Close the connection; the client may be used again afterwards."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def call(self, op: str, /, **args: Any) -> Any:
        """Run any op; known ops return their Result Struct, others the raw result."""
        raw = self._connection().request(op, build_args(op, args))
        return decode_result(op, raw)

    def stream(
        self, op: str, args: Mapping[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> SyncEventStream:
        """Start a streaming op and iterate its raw events (``math.inf`` = no idle timeout)."""
        return self._connection().stream(op, build_args(op, args or {}), timeout_s)

    def hello(self) -> HelloResult:
        """The daemon's handshake: its version, pid, and who it thinks we are (user, role)."""
        return self._connection_hello()

    def ping(self) -> PingResult:
        """Round-trip to the daemon (no Redis involved)."""
        return self._op("ping", PingResult)

    def status(self, verbose: bool = False) -> StatusResult:
        """Daemon, Redis store and swarm status; ``verbose`` adds server counters."""
        return self._op("status", StatusResult, verbose=verbose)

    def doctor(self) -> DoctorResult:
        """The daemon's self-checks (Redis reachable, persistence, permissions, ...)."""
        return self._op("doctor", DoctorResult)

    def config_show(self, key: str | None = None) -> ConfigShowResult:
        """Effective config entries with their source; one key, or all of them."""
        return self._op("config.show", ConfigShowResult, key=key)

    def config_set(self, key: str, value: str) -> ConfigSetResult:
        """Set a runtime override (stored in Redis); ``value`` is parsed by the key's type."""
        return self._op("config.set", ConfigSetResult, key=key, value=value)

    def config_reset(self, key: str | None = None) -> ConfigResetResult:
        """Drop one runtime override, or all of them when ``key`` is None."""
        return self._op("config.reset", ConfigResetResult, key=key)

    def config_validate(
        self, text: str | None = None, name: str = "<text>"
    ) -> ConfigValidateResult:
        """Validate TOML ``text`` (reported as ``name``), or the daemon's effective config."""
        return self._op("config.validate", ConfigValidateResult, text=text, name=name)

    # -- internals

    def _op(self, op: str, result_type: type[R], /, **args: Any) -> R:
        raw = self._connection().request(op, build_args(op, args))
        out: R = decode_result(op, raw, result_type)
        return out

    def _connection(self) -> SyncConnection:
        if self._conn is None or self._conn.closed:
            conn = SyncConnection(self.socket_path, timeout_s=self.timeout_s)
            conn.connect()
            self._conn = conn
        return self._conn

    def _connection_hello(self) -> HelloResult:
        server = self._connection().server
        assert server is not None  # set by connect()
        return server


class AsyncClient(_ClientBase):
    """Async client (anyio: asyncio or trio); many tasks may share it concurrently.

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
        from cfn_client.async_connection import AsyncConnection

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

    async def ping(self) -> PingResult:
        """Round-trip to the daemon (no Redis involved)."""
        return await self._op("ping", PingResult)

    async def status(self, verbose: bool = False) -> StatusResult:
        """Daemon, Redis store and swarm status; ``verbose`` adds server counters."""
        return await self._op("status", StatusResult, verbose=verbose)

    async def doctor(self) -> DoctorResult:
        """The daemon's self-checks (Redis reachable, persistence, permissions, ...)."""
        return await self._op("doctor", DoctorResult)

    async def config_show(self, key: str | None = None) -> ConfigShowResult:
        """Effective config entries with their source; one key, or all of them."""
        return await self._op("config.show", ConfigShowResult, key=key)

    async def config_set(self, key: str, value: str) -> ConfigSetResult:
        """Set a runtime override (stored in Redis); ``value`` is parsed by the key's type."""
        return await self._op("config.set", ConfigSetResult, key=key, value=value)

    async def config_reset(self, key: str | None = None) -> ConfigResetResult:
        """Drop one runtime override, or all of them when ``key`` is None."""
        return await self._op("config.reset", ConfigResetResult, key=key)

    async def config_validate(
        self, text: str | None = None, name: str = "<text>"
    ) -> ConfigValidateResult:
        """Validate TOML ``text`` (reported as ``name``), or the daemon's effective config."""
        return await self._op("config.validate", ConfigValidateResult, text=text, name=name)

    # -- internals

    async def _op(self, op: str, result_type: type[R], /, **args: Any) -> R:
        raw = await self._connection().request(op, build_args(op, args))
        out: R = decode_result(op, raw, result_type)
        return out

    def _connection(self) -> AsyncConnection:
        if self._conn is None:
            raise CfnError("AsyncClient is not connected: use `async with AsyncClient() as cfn`")
        return self._conn
