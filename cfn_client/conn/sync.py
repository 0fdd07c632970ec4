"""``SyncConnection``: a blocking cfnd connection, one request at a time (what cfnctl uses).

Replies are matched to requests by id; a reply that arrives after its request
timed out is dropped. See ``conn.base`` for timeouts.
"""

from __future__ import annotations

import math
import socket
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cfn_client.conn.base import (
    CLIENT_MAX_FRAME_BYTES,
    DEFAULT_TIMEOUT_S,
    MIN_WRITE_TIMEOUT_S,
    RECV_BYTES,
    ArgsLike,
    ConnectionBase,
    Message,
    args_to_wire,
    check_hello,
    closed_error,
    decode_message,
    for_op,
    timeout_error,
)
from cfn_client.conn.diagnose import connect_error
from cfn_client.wire.errors import CfnError
from cfn_client.wire.protocol import (
    EventFrame,
    Frame,
    FrameDecoder,
    FrameFault,
    HelloResult,
    Request,
    Response,
    encode_frame,
    raise_for_error,
)

__all__ = ["DEFAULT_TIMEOUT_S", "SyncConnection", "SyncEventStream"]


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
        """True before ``connect()`` and after the connection ended (also when cfnd
        closed it meanwhile, say after its idle timeout: the next call reconnects)."""
        if self._sock is not None and not self._streaming and not self._frames:
            # A non-blocking peek: b"" is EOF. (With a timeout set, recv would first
            # wait for data up to that timeout, whatever the flags say.)
            sock, timeout = self._sock, self._sock.gettimeout()
            sock.setblocking(False)
            try:
                gone = sock.recv(1, socket.MSG_PEEK) == b""
            except (BlockingIOError, InterruptedError):
                gone = False  # open, nothing to read: the usual case
            except OSError:
                gone = True
            finally:
                sock.settimeout(timeout)
            if gone:
                self.close()
        return self._sock is None

    def connect(self) -> HelloResult:
        """Open the socket and handshake; raises DaemonUnreachable, PermissionDenied, ..."""
        if self._sock is not None:
            raise CfnError("already connected")
        sock = self._connect_socket()
        self._sock, self._dead = sock, None
        try:
            self.server = check_hello(self.request("hello", self._hello_args()))
        except BaseException:
            self.close()
            raise
        return self.server

    def _connect_socket(self) -> socket.socket:
        # A full accept queue (a burst of connections; cfnd is catching up) answers
        # EAGAIN at once: retry until the timeout rather than call cfnd unreachable.
        wait_s = _sock_timeout(self.timeout_s)
        deadline = time.monotonic() + (wait_s if wait_s is not None else 30.0)
        delay = 0.005
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(_sock_timeout(self.timeout_s))
                sock.connect(str(self.socket_path))
            except BlockingIOError as exc:
                sock.close()
                if time.monotonic() + delay >= deadline:
                    raise connect_error(exc, self.socket_path) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            except OSError as exc:
                sock.close()
                raise connect_error(exc, self.socket_path) from None
            return sock

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
