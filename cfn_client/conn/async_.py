"""``AsyncConnection``: one cfnd connection serving many concurrent requests (anyio).

Works under asyncio and trio. A single reader task, owned by a task group that
lives inside the connection's ``async with``, routes every reply to its request
by id, so pipelined requests may be answered in any order.
"""

from __future__ import annotations

import math
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import SocketStream, TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

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
    FrameDecoder,
    FrameFault,
    HelloResult,
    Request,
    Response,
    encode_frame,
    raise_for_error,
)

# Events buffered per stream before the reader waits for the consumer (backpressure).
STREAM_BUFFER = 256


class _Reply:
    """A pending plain request: the reader fills ``response`` or ``error`` and sets the event."""

    __slots__ = ("error", "event", "response")

    def __init__(self, event: anyio.Event) -> None:
        self.event = event
        self.response: Response | None = None
        self.error: CfnError | None = None


class _Sink:
    """A pending stream: the reader forwards its frames; ``error`` says why it ended early."""

    __slots__ = ("error", "send")

    def __init__(self, send: MemoryObjectSendStream[Message]) -> None:
        self.send = send
        self.error: CfnError | None = None


class AsyncConnection(ConnectionBase):
    """An anyio connection (asyncio or trio) serving many concurrent requests.

    One reader task, owned by a task group inside the connection's context,
    routes each reply to its request by id. Use ``async with``; if you call
    ``connect()``/``close()`` yourself, call both from the same task.
    """

    def __init__(
        self,
        socket_path: str | Path | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: str | None = None,
    ) -> None:
        super().__init__(socket_path, timeout_s=timeout_s, client=client)
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._stream: SocketStream | None = None
        self._send_lock: anyio.Lock | None = None
        self._pending: dict[int, _Reply | _Sink] = {}

    @property
    def closed(self) -> bool:
        """True before ``connect()``, after ``close()`` and once the daemon hung up."""
        return self._stack is None or self._dead is not None

    async def connect(self) -> HelloResult:
        """Open the socket, start the reader and handshake."""
        if self._stack is not None:
            raise CfnError("already connected")
        try:
            with anyio.fail_after(_fail_after(self.timeout_s)):
                stream = await anyio.connect_unix(self.socket_path)
        except TimeoutError:
            raise connect_error(TimeoutError(), self.socket_path) from None
        except OSError as exc:
            raise connect_error(exc, self.socket_path) from None
        stack = AsyncExitStack()
        # Callbacks run last-in first-out: the task group ends before the socket closes.
        stack.push_async_callback(stream.aclose)
        self._stream, self._dead = stream, None
        self._send_lock = anyio.Lock()
        try:
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._tg.start_soon(self._reader, stream)
            self._stack = stack
            self.server = check_hello(await self.request("hello", self._hello_args()))
        except BaseException:
            self._stack = None
            await self._teardown(stack)
            raise
        return self.server

    async def request(self, op: str, args: ArgsLike = None, timeout_s: float | None = None) -> Any:
        """Send one request and wait for its result; safe to call from many tasks at once."""
        self._check_open(op)
        timeout = self._timeout(timeout_s)
        rid = next(self._ids)
        reply = _Reply(anyio.Event())
        self._pending[rid] = reply
        try:
            with anyio.fail_after(_fail_after(timeout)):
                await self._send(rid, op, args)
                await reply.event.wait()
        except TimeoutError:
            raise timeout_error(op, timeout, self.socket_path) from None
        finally:
            self._pending.pop(rid, None)
        if reply.error is not None:
            raise for_op(reply.error, op)
        assert reply.response is not None
        raise_for_error(reply.response)
        return reply.response.result

    def stream(
        self, op: str, args: ArgsLike = None, timeout_s: float | None = None
    ) -> AsyncEventStream:
        """A streaming op: ``async with conn.stream(op) as events: async for e in events``.

        Leaving early stops delivery; cfnd keeps sending until the stream ends on its
        side (the protocol has no cancel), so use a dedicated connection for endless follows.
        """
        return AsyncEventStream(self, op, args, self._timeout(timeout_s))

    async def close(self) -> None:
        """Fail pending requests, stop the reader, close the socket; idempotent."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        self._fail_all(self._dead or CfnError("the connection to cfnd was closed by the client"))
        await self._teardown(stack)

    aclose = close

    async def __aenter__(self) -> Self:
        if self._stack is None:
            await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals

    def _check_open(self, op: str | None = None) -> None:
        if self._dead is not None:
            raise for_op(self._dead, op)
        if self._stack is None or self._stream is None:
            raise CfnError("not connected to cfnd: use `async with` or call connect() first")

    async def _teardown(self, stack: AsyncExitStack) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        self._tg = None
        self._dead = self._dead or CfnError("the connection to cfnd is closed")
        await stack.aclose()

    async def _send(self, rid: int, op: str, args: ArgsLike) -> None:
        frame = encode_frame(Request(id=rid, op=op, args=args_to_wire(args)), "msgpack")
        assert self._send_lock is not None
        async with self._send_lock:
            self._check_open(op)
            stream = self._stream
            assert stream is not None
            # Shielded so a caller's timeout cannot cut a frame in half; a daemon that
            # stops reading is caught by the scope's own deadline instead.
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + max(self.timeout_s, MIN_WRITE_TIMEOUT_S)
                try:
                    await stream.send(frame)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                    self._dead = self._dead or closed_error(self.socket_path, op, exc)
            if scope.cancelled_caught:
                self._dead = closed_error(self.socket_path, op, TimeoutError("write stalled"))
                # Closing the socket wakes the reader, which fails every pending request.
                await stream.aclose()
            if self._dead is not None:
                raise for_op(self._dead, op)

    async def _reader(self, stream: SocketStream) -> None:
        """Route every incoming frame to its request until EOF, a fatal fault or close()."""
        try:
            error = await self._read_loop(stream)
        except Exception as exc:  # a bug here must fail the callers, not cancel their task
            error = CfnError(f"internal error in the cfn client reader: {exc!r}")
            error.__cause__ = exc
        self._dead = self._dead or error
        self._fail_all(self._dead)

    async def _read_loop(self, stream: SocketStream) -> CfnError:
        decoder = FrameDecoder(CLIENT_MAX_FRAME_BYTES)
        # Ends at EOF, on a fatal frame, or when close() cancels the task group.
        while True:
            try:
                data = await stream.receive(RECV_BYTES)
            except anyio.EndOfStream:
                fault = decoder.eof()
                return closed_error(self.socket_path, None, fault.error if fault else None)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                return self._dead or closed_error(self.socket_path, None, exc)
            for item in decoder.feed(data):
                if isinstance(item, FrameFault):
                    if item.fatal:
                        return item.error
                    continue  # a non-fatal fault carries no id to report it to
                try:
                    msg = decode_message(item)
                except CfnError as err:
                    return err  # unreadable means uncorrelatable: give up on the connection
                await self._dispatch(msg)

    async def _dispatch(self, msg: Message) -> None:
        rid = msg.id
        if rid is None and isinstance(msg, Response) and not msg.ok and len(self._pending) == 1:
            # An error cfnd could not tie to a request: with one pending, it is that one's.
            (rid,) = self._pending
        waiter = self._pending.get(rid) if isinstance(rid, int) else None
        if waiter is None or not isinstance(rid, int):
            return  # late reply to a request that timed out, or a stream left early
        if isinstance(waiter, _Reply):
            if isinstance(msg, Response):
                waiter.response = msg
                waiter.event.set()
            return
        try:
            await waiter.send.send(msg)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._pending.pop(rid, None)
            return
        if isinstance(msg, Response):
            self._pending.pop(rid, None)
            waiter.send.close()

    def _fail_all(self, error: CfnError) -> None:
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.error = error
            if isinstance(waiter, _Reply):
                waiter.event.set()
            else:
                waiter.send.close()


class AsyncEventStream:
    """Events of one streaming request; ``result`` holds the final result once done."""

    def __init__(self, conn: AsyncConnection, op: str, args: ArgsLike, timeout: float) -> None:
        self._conn = conn
        self.op = op
        self._args = args
        self._timeout = timeout
        self.id: int | None = None
        self.done = False
        #: The final response's result, set when iteration ends normally.
        self.result: Any = None
        self._sink: _Sink | None = None
        self._recv: MemoryObjectReceiveStream[Message] | None = None

    async def __aenter__(self) -> Self:
        conn = self._conn
        conn._check_open(self.op)
        send, recv = anyio.create_memory_object_stream[Message](STREAM_BUFFER)
        rid = next(conn._ids)
        self.id, self._sink, self._recv = rid, _Sink(send), recv
        conn._pending[rid] = self._sink
        try:
            with anyio.fail_after(_fail_after(self._timeout)):
                await conn._send(rid, self.op, self._args)
        except TimeoutError:
            await self._close()
            raise timeout_error(self.op, self._timeout, conn.socket_path) from None
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        if self._recv is None:
            if self.done:
                raise StopAsyncIteration
            raise CfnError("use `async with conn.stream(...) as events` before iterating")
        if self.done:
            raise StopAsyncIteration
        try:
            with anyio.fail_after(_fail_after(self._timeout)):
                msg = await self._recv.receive()
        except TimeoutError:
            raise timeout_error(self.op, self._timeout, self._conn.socket_path) from None
        except anyio.EndOfStream:
            self.done = True
            assert self._sink is not None
            error = self._sink.error or closed_error(self._conn.socket_path, self.op)
            raise for_op(error, self.op) from None
        if isinstance(msg, EventFrame):
            return msg.event
        self.done = True
        raise_for_error(msg)
        self.result = msg.result
        raise StopAsyncIteration

    async def _close(self) -> None:
        if self.id is not None:
            self._conn._pending.pop(self.id, None)
        if self._sink is not None:
            self._sink.send.close()
        if self._recv is not None:
            self._recv.close()
            self._recv = None
        self.done = True


def _fail_after(seconds: float) -> float | None:
    return None if math.isinf(seconds) else seconds
