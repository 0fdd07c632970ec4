"""The blocking client's transport: a lazily (re)opened ``SyncConnection``, and follows."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cfn_client.api.base import ClientBase, R, build_args, decode_result
from cfn_client.conn.base import DEFAULT_TIMEOUT_S
from cfn_client.conn.sync import SyncConnection, SyncEventStream
from cfn_client.wire.protocol import Args, HelloResult
from cfn_client.wire.schema.swarm import Event

__all__ = ["EventFollow", "SyncTransport"]


class EventFollow(Iterator[Event]):
    """``events.follow`` or ``loop.follow`` on a blocking client: iterate for ``Event``s
    until the daemon ends the stream.

    Leaving early (``close()``, the end of a ``with`` block, Ctrl-C) closes the
    connection, which is how cfnd learns to stop; the Client reconnects on its next call.
    """

    def __init__(self, raw: SyncEventStream) -> None:
        self._raw = raw
        self._op = raw.op

    @property
    def done(self) -> bool:
        """True once the stream ended (daemon's final response, or ``close()``)."""
        return self._raw.done

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Event:
        event: Event = decode_result(self._op, next(self._raw), Event)
        return event

    def close(self) -> None:
        """Stop following."""
        self._raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncTransport(ClientBase):
    """The blocking client's connection handling (the ops are in ``api.sync``).

    Blocking client. Connects on first use (or on ``with``); reconnects if the link dropped.

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

    # -- internals

    def _op(self, op: str, result_type: type[R], /, **args: Any) -> R:
        return self._call(op, result_type, args)

    def _pause(self, seconds: float) -> None:
        time.sleep(seconds)

    def _call(
        self, op: str, result_type: type[R], args: dict[str, Any], timeout_s: float | None = None
    ) -> R:
        raw = self._connection().request(op, build_args(op, args), timeout_s)
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

    def _follow(self, op: str, args: Args | dict[str, Any]) -> EventFollow:
        # A follow may idle for long: no timeout; the connection serves nothing else meanwhile.
        return EventFollow(self._connection().stream(op, args, math.inf))
