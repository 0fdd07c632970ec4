"""The Unix-socket server: accept, frame, authenticate, dispatch, drain.

One task group owns the accept loop and every connection; each connection owns
a task group for its in-flight (pipelined) requests. Bad input on one
connection gets a specific error and never disturbs the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import os
import socket
import stat
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from cfn_client.wire.errors import CfnError, ConfigError, Conflict, ProtocolError, ShuttingDown
from cfn_client.wire.ops import lookup_op
from cfn_client.wire.protocol import (
    EventFrame,
    Frame,
    FrameDecoder,
    FrameFault,
    Framing,
    Response,
    decode_body,
    encode_frame,
    error_response,
    parse_request,
    request_id_of,
)
from cfn_daemon.api.access import (
    ConnectionLimits,
    RoleResolver,
    as_task,
    longest_idle,
    runs_as_task,
)
from cfn_daemon.api.router import Peer, RequestContext, Router
from cfn_daemon.util import memory

__all__ = ["ConnectionLimits", "RoleResolver", "Server", "ServerStats"]

log = structlog.get_logger("cfn.server")

_PEERCRED = struct.Struct("3i")
# A connection that buffered this much counts as big: its close trims the heap.
_BIG_BUFFER_BYTES = 64 * 1024
_READ_CHUNK = 1 << 16


@dataclass
class ServerStats:
    """Counters reported by ``status``."""

    connections: int = 0
    requests_total: int = 0
    errors_total: int = 0
    inflight: int = 0
    closed_by_limits: int = 0  # idle, evicted or slow-frame connections we closed


class Server:
    """Owns the listening socket and every client connection."""

    def __init__(
        self,
        *,
        path: Path,
        router: Router,
        roles: RoleResolver,
        mode: int = 0o660,
        group: str | None = None,
        max_frame_bytes: int,
        max_connections: int,
        max_inflight_per_connection: int,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.path = path
        self.router = router
        self.roles = roles
        self.mode = mode
        self.group = group
        self.max_frame_bytes = max_frame_bytes
        self.max_connections = max_connections
        self.max_inflight = max_inflight_per_connection
        self.limits = limits or ConnectionLimits()
        self._by_uid: dict[int, set[_Session]] = {}
        self._open = 0  # sessions not closed or evicted yet
        self._big_open = 0  # of them, those that buffered a big frame
        self.stats = ServerStats()
        self._sock: socket.socket | None = None
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._inflight_ops: dict[int, str] = {}
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._stream_tasks: set[asyncio.Task[None]] = set()
        self._conn_seq = 0

    # ------------------------------------------------------------------ socket file

    def bind(self) -> None:
        """Create the socket file (mode ``self.mode``), replacing a stale one safely.

        Refuses with ``Conflict`` when a live process still answers on the path.
        """
        gid = self._group_id()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        # Bind under a tight umask so the file is never more open than intended.
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        try:
            if gid is not None:
                os.chown(self.path, -1, gid)
            os.chmod(self.path, self.mode)
            self.roles.socket_gid = os.stat(self.path).st_gid  # its members: operator
        except OSError as exc:
            sock.close()
            os.unlink(self.path)
            raise ConfigError(
                f"daemon.socket_group {self.group!r}: cannot give {self.path} to it: {exc}",
                details={"key": "daemon.socket_group", "value": self.group},
            ) from None
        # A deep accept queue: a burst of clients waits there instead of being refused.
        sock.listen(max(socket.SOMAXCONN, 4096))
        sock.setblocking(False)
        self._sock = sock
        self._inode = os.stat(self.path).st_ino

    def _group_id(self) -> int | None:
        if not self.group:
            return None
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise ConfigError(
                f"daemon.socket_group {self.group!r}: no such group; expected an existing "
                "group name (see `getent group`), or leave it unset",
                details={"key": "daemon.socket_group", "value": self.group},
            ) from None

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise Conflict(
                f"{self.path} exists and is not a socket; refusing to replace it",
                details={"path": str(self.path)},
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.settimeout(1.0)
            probe.connect(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            # Nobody listens: a leftover from a crashed cfnd.
            log.info("stale_socket_removed", path=str(self.path))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise
            return
        else:
            pid, _, _ = _PEERCRED.unpack(
                probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
            raise Conflict(
                f"another cfnd (pid {pid}) is serving {self.path}; stop it first "
                "or choose another socket with --socket / CFN_SOCKET",
                details={"path": str(self.path), "pid": pid},
            )
        finally:
            probe.close()

    def unlink(self) -> None:
        """Remove our socket file (only if it is still ours)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    # ------------------------------------------------------------------ serving

    async def serve(self) -> None:
        """Accept connections until ``shutdown`` cancels the accept loop."""
        assert self._sock is not None, "bind() first"
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            while not self._draining:
                try:
                    conn, _ = await loop.sock_accept(self._sock)
                except OSError as exc:
                    # EMFILE and friends: log, back off briefly, keep serving.
                    log.error("accept_failed", error=str(exc))
                    await asyncio.sleep(0.1)
                    continue
                session = await self._admit(conn)
                if session is None:
                    continue
                self._conn_seq += 1
                task = tg.create_task(self._connection(session), name=f"conn-{self._conn_seq}")
                self._conn_tasks.add(task)
                task.add_done_callback(self._conn_tasks.discard)

    async def shutdown(self, serve_task: asyncio.Task[None], grace_s: float, hard_s: float) -> None:
        """Stop accepting, let in-flight requests finish within ``grace_s``, then cancel
        what is left and wait at most ``hard_s`` more, logging what was still running."""
        self._draining = True
        for t in list(self._stream_tasks):
            t.cancel()
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            log.warning(
                "shutdown_grace_expired",
                grace_s=grace_s,
                still_running=sorted(self._inflight_ops.values()),
            )
        leftover = [t.get_name() for t in self._conn_tasks if not t.done()]
        serve_task.cancel()
        _done, pending = await asyncio.wait({serve_task}, timeout=hard_s)
        if pending:
            log.error(
                "shutdown_hard_deadline",
                hard_s=hard_s,
                still_running=sorted(self._inflight_ops.values()),
            )
        else:
            log.info("server_stopped", closed_connections=len(leftover))
        self.unlink()

    # ------------------------------------------------------------------ connections

    async def _admit(self, conn: socket.socket) -> _Session | None:
        """Set up a new connection within the caps, closing the longest-idle connection
        (of the same uid at the per-uid cap) to make room; None when refused."""
        try:
            peer = self._peer(conn)
            mine = self._by_uid.get(peer.uid, set())
            full: tuple[int, str, Any] | None = None
            if len(mine) >= self.limits.per_uid:
                full = (self.limits.per_uid, "uid", mine)
            elif self._open >= self.max_connections:
                full = (self.max_connections, "daemon", self._sessions())
            if full is not None:
                limit, scope, candidates = full
                victim = longest_idle(candidates)
                if victim is None:
                    # Everything is busy: refuse this one rather than cut off work.
                    log.warning("connection_refused_limit", uid=peer.uid, limit=limit, scope=scope)
                    conn.close()
                    return None
                victim.close(f"idle connection closed to make room (max {limit} per {scope})")
            reader, writer = await asyncio.open_unix_connection(
                sock=conn, limit=self.max_frame_bytes + 16
            )
        except OSError as exc:
            conn.close()
            log.warning("connection_setup_failed", error=str(exc))
            return None
        session = _Session(self, peer, reader, writer)
        self._by_uid.setdefault(peer.uid, set()).add(session)
        self._open += 1
        return session

    def _sessions(self) -> list[_Session]:
        return [x for group in self._by_uid.values() for x in group]

    def _forget(self, session: _Session) -> None:
        """Take ``session`` out of the caps' accounting (once, at close or eviction)."""
        group = self._by_uid.get(session.peer.uid)
        if group is None or session not in group:
            return
        group.discard(session)
        if not group:
            del self._by_uid[session.peer.uid]
        self._open -= 1

    async def _connection(self, session: _Session) -> None:
        self.stats.connections += 1
        peer, writer = session.peer, session.writer
        try:
            await session.run()
        except (ConnectionError, OSError) as exc:
            log.info("connection_lost", uid=peer.uid, error=str(exc))
        except Exception:
            # A bug in one connection must never take the server down with it.
            log.exception("connection_failed", uid=peer.uid)
        finally:
            self.stats.connections -= 1
            self._forget(session)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await asyncio.shield(writer.wait_closed())
            if session.big:
                self._big_open -= 1
                # The last big buffer gone, or a while since the last trim: give the
                # freed pages back (many interleaved buffers fragment the heap).
                memory.trim(force=self._big_open == 0)

    def _peer(self, conn: socket.socket) -> Peer:
        pid, uid, gid = _PEERCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        grant = self.roles.grant(uid, gid)
        trusted = uid in (0, os.geteuid())
        capped = self.roles.auth.cap_tasks and runs_as_task(pid)
        if capped:
            grant = as_task(grant)  # a task is not the daemon, even under cfnd's uid
            trusted = False
        return Peer(
            pid=pid,
            uid=uid,
            gid=gid,
            user=grant.user,
            role=grant.role,
            exec=grant.exec,
            rate_exempt=trusted,
            task=capped,
        )

    # ------------------------------------------------------------------ bookkeeping

    @property
    def draining(self) -> bool:
        """True once ``shutdown`` began: new requests are refused."""
        return self._draining

    def count_error(self) -> None:
        """Count a request that ended in an error (reported by ``status``)."""
        self.stats.errors_total += 1

    def _begin(self, key: int, op: str) -> None:
        self._inflight_ops[key] = op
        self.stats.inflight = len(self._inflight_ops)
        self._idle.clear()

    def _end(self, key: int) -> None:
        self._inflight_ops.pop(key, None)
        self.stats.inflight = len(self._inflight_ops)
        if not self._inflight_ops:
            self._idle.set()


class _Session:
    """One client connection: reads frames, runs requests concurrently, writes replies.

    Reads wait at most until the idle timeout (nothing in flight) or the partial-frame
    deadline (a frame begun but not complete); either ends the connection.
    """

    def __init__(
        self,
        server: Server,
        peer: Peer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.peer = peer
        self.reader = reader
        self.writer = writer
        self._write_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(server.max_inflight)
        self._closed = False
        self.inflight = 0
        self.big = False
        self._last_active = time.monotonic()
        self._frame_started: float | None = None

    @property
    def idle_since(self) -> float | None:
        """Since when nothing happened on this connection; None while it is busy."""
        if self._closed or self.inflight or self._frame_started is not None:
            return None
        return self._last_active

    def close(self, reason: str) -> None:
        """End the connection from our side (its reads see EOF; nothing more is sent)."""
        if self._closed:
            return
        self._closed = True
        self.server._forget(self)
        self.server.stats.closed_by_limits += 1
        # Debug: a storm of idle connections must not become a storm of log lines.
        log.debug("connection_closed", uid=self.peer.uid, reason=reason)
        self.writer.close()

    def _read_timeout(self, now: float) -> float:
        limits = self.server.limits
        if self._frame_started is not None:
            return self._frame_started + limits.frame_timeout_s - now
        if self.inflight:
            return limits.idle_timeout_s  # busy: look again later
        return self._last_active + limits.idle_timeout_s - now

    async def _read(self, decoder: FrameDecoder) -> bytes | None:
        """The next chunk (b"" at EOF), or None once a timeout closed the connection."""
        # Bounded: each pass either returns or moves a deadline closer.
        while not self._closed:
            now = time.monotonic()
            try:
                async with asyncio.timeout(max(self._read_timeout(now), 0.0)):
                    return await self.reader.read(_READ_CHUNK)
            except TimeoutError:
                pass
            except (ConnectionError, OSError):
                self._closed = True  # a reset is an abrupt EOF; answer nothing more
                return b""
            now = time.monotonic()
            limits = self.server.limits
            if self._frame_started is not None:
                if now - self._frame_started >= limits.frame_timeout_s:
                    await self._slow_frame(decoder)
                    return None
            elif not self.inflight and now - self._last_active >= limits.idle_timeout_s:
                self.close(f"idle for {limits.idle_timeout_s:g}s")
                return None
        return b""

    async def _slow_frame(self, decoder: FrameDecoder) -> None:
        framing, got = decoder.partial()
        self.server.stats.errors_total += 1
        err = ProtocolError(
            f"{framing} frame not complete within {self.server.limits.frame_timeout_s:g}s "
            f"({got} bytes so far); closing the connection",
            code="truncated_frame",
            details={"frame_timeout_s": self.server.limits.frame_timeout_s, "bytes": got},
        )
        log.info("bad_frame", code=err.instance_code, uid=self.peer.uid, error=err.message)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):  # a client that does not read gets nothing
                await self._send(error_response(None, err), framing)
        self.close("partial frame timeout")

    async def run(self) -> None:
        decoder = FrameDecoder(self.server.max_frame_bytes)
        async with asyncio.TaskGroup() as tg:
            while not self._closed:
                data = await self._read(decoder)
                if data is None:
                    break
                items: list[Frame | FrameFault] = []
                if data:
                    self._last_active = time.monotonic()
                    items = decoder.feed(data)
                    self._track(decoder, bool(items))
                elif not self._closed:
                    fault = decoder.eof()
                    items = [fault] if fault else []
                for item in items:
                    if isinstance(item, FrameFault):
                        self.server.stats.errors_total += 1
                        log.info(
                            "bad_frame",
                            code=item.error.instance_code,
                            uid=self.peer.uid,
                            error=item.error.message,
                        )
                        await self._send(error_response(None, item.error), item.framing)
                        if item.fatal:
                            self._closed = True
                            break
                        continue
                    # Backpressure: a client pipelining past the limit waits for a slot.
                    await self._slots.acquire()
                    self.inflight += 1
                    tg.create_task(self._request(item))
                if not data:
                    break
        # Every in-flight request has answered (the task group waited for them).

    def _track(self, decoder: FrameDecoder, completed: bool) -> None:
        buffered = decoder.buffered
        if buffered >= _BIG_BUFFER_BYTES and not self.big:
            self.big = True
            self.server._big_open += 1
        if not buffered:
            self._frame_started = None
        elif completed or self._frame_started is None:
            self._frame_started = time.monotonic()  # a new frame began

    async def _request(self, frame: Frame) -> None:
        server = self.server
        key = id(asyncio.current_task())
        rid: int | str | None = None
        server.stats.requests_total += 1
        try:
            try:
                obj = decode_body(frame)
                rid = request_id_of(obj)
                req = parse_request(obj, frame.framing)
                lookup_op(req.op)
            except CfnError as err:
                # Never reached the router (bad envelope, unknown op): log it here.
                server.stats.errors_total += 1
                log.info("request", op="?", id=rid, uid=self.peer.uid, outcome=err.instance_code)
                await self._send(error_response(rid, err), frame.framing)
                return
            server._begin(key, req.op)
            ctx = RequestContext(peer=self.peer, request_id=rid, op=req.op)
            await self._routed(ctx, req.args, frame.framing)
        finally:
            server._end(key)
            self.inflight -= 1
            self._last_active = time.monotonic()
            self._slots.release()

    async def _routed(
        self, ctx: RequestContext, raw_args: dict[str, Any], framing: Framing
    ) -> None:
        rid, op = ctx.request_id, ctx.op
        try:
            result = await self.server.router.call(ctx, raw_args)
            if lookup_op(op).streaming:
                await self._stream(ctx, result, framing)
            else:
                await self._send(Response(id=rid, ok=True, result=result), framing)
        except asyncio.CancelledError:
            if self.server._draining:
                # Tell the client why rather than just dropping the connection.
                err = ShuttingDown(
                    f"{op} was cancelled: cfnd is shutting down and the "
                    "shutdown grace period ran out"
                )
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(self._send(error_response(rid, err), framing), 1)
            raise
        except CfnError as err:
            await self._send(error_response(rid, err), framing)
        except Exception as exc:
            log.exception("request_failed", op=op, request_id=rid, uid=self.peer.uid)
            internal = CfnError(
                f"internal error in {op}: {type(exc).__name__}; see the cfnd log",
                code="internal_error",
            )
            await self._send(error_response(rid, internal), framing)

    async def _stream(
        self, ctx: RequestContext, events: AsyncIterator[Any], framing: Framing
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        # Streams are endless by nature: shutdown cancels them instead of waiting.
        self.server._end(id(task))
        self.server._stream_tasks.add(task)
        try:
            async for event in events:
                await self._send(EventFrame(id=ctx.request_id, event=event), framing)
            await self._send(Response(id=ctx.request_id, ok=True, result=None), framing)
        except asyncio.CancelledError:
            if self.server._draining:
                await self._send(
                    error_response(ctx.request_id, ShuttingDown("cfnd is shutting down")),
                    framing,
                )
            raise
        finally:
            self.server._stream_tasks.discard(task)

    async def _send(self, obj: Any, framing: Framing) -> None:
        data = encode_frame(obj, framing)
        if len(data) > self.server.max_frame_bytes + 5 and isinstance(obj, Response):
            err = ProtocolError(
                f"reply of {len(data)} bytes exceeds the frame limit {self.server.max_frame_bytes}",
                code="frame_too_large",
            )
            data = encode_frame(error_response(obj.id, err), framing)
        async with self._write_lock:
            if self.writer.is_closing():
                return
            try:
                self.writer.write(data)
                await self.writer.drain()
            except (ConnectionError, OSError):
                # The client went away; its remaining replies have nowhere to go.
                self._closed = True
