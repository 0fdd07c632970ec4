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
import pwd
import socket
import stat
import struct
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
    Role,
    decode_body,
    encode_frame,
    error_response,
    parse_request,
    request_id_of,
)
from cfn_daemon.api.router import Peer, RequestContext, Router
from cfn_daemon.settings.schema import AuthConfig

log = structlog.get_logger("cfn.server")

_PEERCRED = struct.Struct("3i")
_READ_CHUNK = 1 << 16


@dataclass
class ServerStats:
    """Counters reported by ``status``."""

    connections: int = 0
    requests_total: int = 0
    errors_total: int = 0
    inflight: int = 0


class RoleResolver:
    """Maps a peer's uid/gid to a role: root and cfnd's own user are always admin."""

    def __init__(self, auth: AuthConfig) -> None:
        self.auth = auth
        self._cache: dict[tuple[int, int], tuple[str, Role]] = {}

    def resolve(self, uid: int, gid: int) -> tuple[str, Role]:
        key = (uid, gid)
        if key not in self._cache:
            self._cache[key] = self._compute(uid, gid)
        return self._cache[key]

    def _compute(self, uid: int, gid: int) -> tuple[str, Role]:
        try:
            user = pwd.getpwuid(uid).pw_name
            groups = {grp.getgrgid(g).gr_name for g in os.getgrouplist(user, gid)}
        except KeyError:
            user, groups = str(uid), set()
        if uid in (0, os.geteuid()) or user in self.auth.admin_users:
            return user, Role.admin
        if groups & set(self.auth.admin_groups):
            return user, Role.admin
        if user in self.auth.viewer_users:
            return user, Role.viewer
        return user, Role[self.auth.default_role]


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
    ) -> None:
        self.path = path
        self.router = router
        self.roles = roles
        self.mode = mode
        self.group = group
        self.max_frame_bytes = max_frame_bytes
        self.max_connections = max_connections
        self.max_inflight = max_inflight_per_connection
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
        except OSError as exc:
            sock.close()
            os.unlink(self.path)
            raise ConfigError(
                f"daemon.socket_group {self.group!r}: cannot give {self.path} to it: {exc}",
                details={"key": "daemon.socket_group", "value": self.group},
            ) from None
        sock.listen(512)
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
                if len(self._conn_tasks) >= self.max_connections:
                    log.warning("connection_refused_limit", limit=self.max_connections)
                    conn.close()
                    continue
                self._conn_seq += 1
                task = tg.create_task(self._connection(conn), name=f"conn-{self._conn_seq}")
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

    async def _connection(self, conn: socket.socket) -> None:
        self.stats.connections += 1
        try:
            peer = self._peer(conn)
            reader, writer = await asyncio.open_unix_connection(
                sock=conn, limit=self.max_frame_bytes + 16
            )
        except OSError as exc:
            conn.close()
            self.stats.connections -= 1
            log.warning("connection_setup_failed", error=str(exc))
            return
        session = _Session(self, peer, writer)
        try:
            await session.run(reader)
        except (ConnectionError, OSError) as exc:
            log.info("connection_lost", uid=peer.uid, error=str(exc))
        except Exception:
            # A bug in one connection must never take the server down with it.
            log.exception("connection_failed", uid=peer.uid)
        finally:
            self.stats.connections -= 1
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await asyncio.shield(writer.wait_closed())

    def _peer(self, conn: socket.socket) -> Peer:
        pid, uid, gid = _PEERCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        user, role = self.roles.resolve(uid, gid)
        return Peer(pid=pid, uid=uid, gid=gid, user=user, role=role)

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
    """One client connection: reads frames, runs requests concurrently, writes replies."""

    def __init__(self, server: Server, peer: Peer, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.peer = peer
        self.writer = writer
        self._write_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(server.max_inflight)
        self._closed = False

    async def run(self, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder(self.server.max_frame_bytes)
        async with asyncio.TaskGroup() as tg:
            while not self._closed:
                try:
                    data = await reader.read(_READ_CHUNK)
                except (ConnectionError, OSError):
                    data = b""  # a reset is an abrupt EOF; answer nothing more
                    self._closed = True
                items: list[Frame | FrameFault] = []
                if data:
                    items = decoder.feed(data)
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
                    tg.create_task(self._request(item))
                if not data:
                    break
        # Every in-flight request has answered (the task group waited for them).

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
