"""Connections to cfnd over its Unix socket: ``SyncConnection`` here, ``AsyncConnection``
(anyio, imported on first use so that ``cfnctl`` never pays for anyio) in async_connection.

Both send msgpack frames, start with ``hello``, and match replies to requests
by id: the daemon may answer pipelined requests out of order, and a reply that
arrives after its request timed out is simply dropped.

Timeouts: ``timeout_s=None`` on a call means the connection's default;
``math.inf`` waits forever (for streams that may idle, such as follows).
On a stream the timeout bounds the wait for each frame, not the whole stream.
"""

from __future__ import annotations

import itertools
import math
import socket
import time
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import msgspec

from cfn_client import __version__
from cfn_client.conn.diagnose import connect_error
from cfn_client.wire.errors import CfnError, DaemonUnreachable, ProtocolError, RequestTimeout
from cfn_client.wire.paths import default_socket_path
from cfn_client.wire.protocol import (
    PROTOCOL_VERSION,
    Args,
    EventFrame,
    Frame,
    FrameDecoder,
    FrameFault,
    HelloArgs,
    HelloResult,
    Request,
    Response,
    decode_body,
    decode_response,
    encode_frame,
    raise_for_error,
)

if TYPE_CHECKING:
    from cfn_client.conn.async_ import AsyncConnection, AsyncEventStream

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "AsyncConnection",
    "AsyncEventStream",
    "SyncConnection",
    "SyncEventStream",
    "args_to_wire",
    "check_hello",
    "client_name",
]

DEFAULT_TIMEOUT_S = 10.0
# The daemon's frame cap is configurable up to 64 MiB; the client must not be the side refusing.
CLIENT_MAX_FRAME_BYTES = 64 << 20
RECV_BYTES = 256 * 1024
# A write that cannot finish in this long means cfnd stopped reading: the connection is dead.
MIN_WRITE_TIMEOUT_S = 10.0

ArgsLike = Args | Mapping[str, Any] | None
Message = Response | EventFrame


def client_name() -> str:
    """How this client introduces itself in ``hello``."""
    return f"cfnctl/{__version__}"


def args_to_wire(args: ArgsLike) -> dict[str, Any]:
    """The ``args`` object of a request.

    For a Struct only fields that differ from their default are sent, so a newer
    client still talks to an older daemon as long as the new fields are unused.
    """
    if args is None:
        return {}
    if not isinstance(args, msgspec.Struct):
        return dict(args)
    out: dict[str, Any] = {}
    for field in msgspec.structs.fields(args):
        value = getattr(args, field.name)
        if field.default is not msgspec.NODEFAULT and value == field.default:
            continue
        if field.default_factory is not msgspec.NODEFAULT and value == field.default_factory():
            continue
        out[field.encode_name] = msgspec.to_builtins(value)
    return out


def check_hello(raw: Any) -> HelloResult:
    """Validate the daemon's answer to ``hello``."""
    try:
        hello = msgspec.convert(raw, HelloResult)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"cfnd answered hello with an unexpected result: {exc}") from None
    if hello.protocol != PROTOCOL_VERSION:
        raise ProtocolError(
            f"cfnd {hello.server_version} speaks protocol {hello.protocol}, this client "
            f"speaks {PROTOCOL_VERSION}; use a cfnctl matching the daemon",
            code="protocol_mismatch",
            details={"server": hello.protocol, "client": PROTOCOL_VERSION},
        )
    return hello


def decode_message(frame: Frame) -> Message:
    try:
        return decode_response(decode_body(frame))
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"malformed reply from cfnd: {exc}") from None


def timeout_error(op: str, timeout: float, path: Path) -> RequestTimeout:
    return RequestTimeout(
        f"no reply from cfnd to {op!r} within {timeout:g}s (socket {path}); "
        "the daemon may be overloaded — retry, or raise --timeout",
        details={"op": op, "timeout_s": timeout, "socket": str(path)},
    )


def closed_error(path: Path, op: str | None, cause: object = None) -> DaemonUnreachable:
    """The connection ended (``op``: the request left without an answer, if known)."""
    what = f" before answering {op!r}" if op else ""
    why = f" ({cause})" if cause is not None else ""
    return DaemonUnreachable(
        f"cfnd closed the connection{what}{why}: it may have stopped or "
        f"restarted; check `cfnctl status` (socket {path}) and retry",
        details={"socket": str(path), "op": op, "reason": "closed", "cause": _text(cause)},
    )


def for_op(err: CfnError, op: str | None) -> CfnError:
    """A fresh copy of ``err`` to raise for request ``op``.

    One connection error may fail many requests; each gets its own instance (so
    tracebacks don't pile up on a shared one), and a generic "closed" error names the op.
    """
    details = err.details
    generic_close = details.get("reason") == "closed" and not details.get("op")
    if op and isinstance(err, DaemonUnreachable) and generic_close:
        return closed_error(Path(details["socket"]), op, details.get("cause"))
    copy = type(err)(err.message, details=dict(details), code=err.instance_code)
    copy.__cause__ = err.__cause__
    return copy


def _text(cause: object) -> str | None:
    return None if cause is None else str(cause)


class ConnectionBase:
    """What the sync and async connections share: socket path, timeouts, ids, handshake."""

    def __init__(
        self,
        socket_path: str | Path | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: str | None = None,
    ) -> None:
        self.socket_path = Path(socket_path) if socket_path is not None else default_socket_path()
        self.timeout_s = timeout_s
        self.client_name = client or client_name()
        #: The daemon's answer to the handshake, once connected.
        self.server: HelloResult | None = None
        self._ids = itertools.count(1)
        # Set once the connection can no longer be used; later calls raise it.
        self._dead: CfnError | None = None

    def _timeout(self, timeout_s: float | None) -> float:
        return self.timeout_s if timeout_s is None else timeout_s

    def _hello_args(self) -> HelloArgs:
        return HelloArgs(protocol=PROTOCOL_VERSION, client=self.client_name)


# --------------------------------------------------------------------------- sync


class SyncConnection(ConnectionBase):
    """A blocking connection; one request at a time, not thread-safe (use one per thread)."""

    def __init__(
        self,
        socket_path: str | Path | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: str | None = None,
    ) -> None:
        super().__init__(socket_path, timeout_s=timeout_s, client=client)
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder(CLIENT_MAX_FRAME_BYTES)
        self._frames: deque[Frame | FrameFault] = deque()
        self._streaming = False

    @property
    def closed(self) -> bool:
        """True before ``connect()`` and after the connection ended."""
        return self._sock is None

    def connect(self) -> HelloResult:
        """Open the socket and handshake; raises DaemonUnreachable, PermissionDenied, ..."""
        if self._sock is not None:
            raise CfnError("already connected")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Unix connect blocks only when cfnd's accept queue is full.
            sock.settimeout(_sock_timeout(self.timeout_s))
            sock.connect(str(self.socket_path))
        except OSError as exc:
            sock.close()
            raise connect_error(exc, self.socket_path) from None
        self._sock, self._dead = sock, None
        try:
            self.server = check_hello(self.request("hello", self._hello_args()))
        except BaseException:
            self.close()
            raise
        return self.server

    def request(self, op: str, args: ArgsLike = None, timeout_s: float | None = None) -> Any:
        """Send one request and return its result; a failed reply raises its ``CfnError``."""
        timeout = self._timeout(timeout_s)
        deadline = time.monotonic() + timeout
        rid = self._send(op, args, timeout)
        # Bounded by the deadline: every pass reads a frame or raises RequestTimeout.
        while True:
            msg = self._next(op, deadline, timeout)
            if msg.id == rid and isinstance(msg, Response):
                raise_for_error(msg)
                return msg.result
            if msg.id is None and isinstance(msg, Response) and not msg.ok:
                # An error the daemon could not tie to a request: it is about ours.
                raise_for_error(msg)
            # Otherwise: a late reply to a request that timed out earlier; drop it.

    def stream(
        self, op: str, args: ArgsLike = None, timeout_s: float | None = None
    ) -> SyncEventStream:
        """Start a streaming op; iterate the result for its events.

        While the stream is open this connection serves nothing else. Leaving it
        before the final response closes the connection, since that is the only
        way to tell cfnd to stop sending.
        """
        timeout = self._timeout(timeout_s)
        rid = self._send(op, args, timeout)
        self._streaming = True
        return SyncEventStream(self, op, rid, timeout)

    def close(self) -> None:
        """Close the socket; idempotent."""
        sock, self._sock = self._sock, None
        self._streaming = False
        self._frames.clear()
        self._decoder = FrameDecoder(CLIENT_MAX_FRAME_BYTES)
        if sock is not None:
            sock.close()

    def __enter__(self) -> Self:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals

    def _require(self) -> socket.socket:
        if self._sock is None:
            if self._dead is not None:
                raise for_op(self._dead, None)
            raise CfnError("not connected to cfnd: call connect() first")
        return self._sock

    def _die(self, err: CfnError) -> CfnError:
        self.close()
        self._dead = err
        return err

    def _send(self, op: str, args: ArgsLike, timeout: float) -> int:
        sock = self._require()
        if self._streaming:
            raise CfnError("this connection is busy with an open stream; use another connection")
        rid = next(self._ids)
        frame = encode_frame(Request(id=rid, op=op, args=args_to_wire(args)), "msgpack")
        try:
            sock.settimeout(_sock_timeout(max(timeout, MIN_WRITE_TIMEOUT_S)))
            sock.sendall(frame)
        except OSError as exc:
            # Part of the frame may be on the wire: the stream is unusable either way.
            raise self._die(closed_error(self.socket_path, op, exc)) from None
        return rid

    def _next(self, op: str, deadline: float, timeout: float) -> Message:
        """The next reply or event on the wire, whoever it is for."""
        sock = self._require()
        # Bounded by the deadline: each recv waits at most the remaining time.
        while not self._frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise timeout_error(op, timeout, self.socket_path)
            try:
                sock.settimeout(_sock_timeout(remaining))
                data = sock.recv(RECV_BYTES)
            except TimeoutError:
                raise timeout_error(op, timeout, self.socket_path) from None
            except OSError as exc:
                raise self._die(closed_error(self.socket_path, op, exc)) from None
            if not data:
                fault = self._decoder.eof()
                cause = fault.error if fault else None
                raise self._die(closed_error(self.socket_path, op, cause))
            self._frames.extend(self._decoder.feed(data))
        item = self._frames.popleft()
        if isinstance(item, FrameFault):
            if item.fatal:
                raise self._die(item.error)
            raise item.error
        try:
            return decode_message(item)
        except CfnError as err:
            # A reply we cannot read cannot be correlated either: nothing after it is trustworthy.
            raise self._die(err) from None


class SyncEventStream(Iterator[Any]):
    """Events of one streaming request; ``result`` holds the final result once done."""

    def __init__(self, conn: SyncConnection, op: str, rid: int, timeout: float) -> None:
        self._conn = conn
        self.op = op
        self.id = rid
        self._timeout = timeout
        self.done = False
        #: The final response's result, set when iteration ends normally.
        self.result: Any = None

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Any:
        # Bounded: each pass consumes a frame; waits are bounded by the per-frame timeout.
        while not self.done:
            msg = self._conn._next(self.op, time.monotonic() + self._timeout, self._timeout)
            if msg.id != self.id:
                if msg.id is None and isinstance(msg, Response) and not msg.ok:
                    self._finish()
                    raise_for_error(msg)
                continue
            if isinstance(msg, EventFrame):
                return msg.event
            self._finish()
            raise_for_error(msg)
            self.result = msg.result
        raise StopIteration

    def close(self) -> None:
        """Stop following; closes the connection if the daemon was still sending."""
        if not self.done:
            self.done = True
            self._conn.close()

    def _finish(self) -> None:
        self.done = True
        self._conn._streaming = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _sock_timeout(seconds: float) -> float | None:
    return None if math.isinf(seconds) else max(seconds, 0.001)


def __getattr__(name: str) -> Any:
    # AsyncConnection lives in its own module so that importing this one never imports anyio.
    if name in ("AsyncConnection", "AsyncEventStream"):
        from cfn_client.conn import async_ as async_connection

        return getattr(async_connection, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
