"""SyncConnection, AsyncConnection and the Client APIs against an in-test fake cfnd.

The fake speaks the real framing and validates args with the real schemas, and
answers each batch of pipelined requests in reverse order, so correlation by id
is exercised on every test. It needs no Redis and no cfn_daemon.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from cfn_client.api import AsyncClient, Client
from cfn_client.conn.async_ import AsyncConnection
from cfn_client.conn.base import args_to_wire
from cfn_client.conn.sync import SyncConnection
from cfn_client.wire.errors import (
    CfnError,
    ConfigError,
    DaemonUnreachable,
    InvalidArgs,
    NotFound,
    PermissionDenied,
    ProtocolError,
    RequestTimeout,
)
from cfn_client.wire.ops import OPS
from cfn_client.wire.protocol import (
    EventFrame,
    FrameDecoder,
    FrameFault,
    HelloResult,
    Request,
    Response,
    decode_args,
    decode_body,
    encode_frame,
    error_response,
    parse_request,
)
from cfn_client.wire.schema.system import (
    Check,
    ConfigEntry,
    ConfigResetResult,
    ConfigSetResult,
    ConfigShowResult,
    ConfigValidateResult,
    DoctorResult,
    PingResult,
    ServerStats,
    StatusArgs,
    StatusResult,
    StoreStatus,
    SwarmCounts,
)

POLL_S = 0.02


class FakeCfnd:
    """A threaded stand-in for cfnd: real framing, canned results, test-only ops.

    Test ops: ``test.echo`` (returns its args), ``test.slow {ms}``, ``test.never``,
    ``test.hangup`` (closes the connection), ``test.stream {n}``, ``test.error
    {code, message, details}``.
    """

    def __init__(
        self, path: Path, *, protocol: int = 1, store_available: bool = True, doctor_ok: bool = True
    ) -> None:
        self.path = path
        self.protocol = protocol
        self.store_available = store_available
        self.doctor_ok = doctor_ok
        self.received: list[Request] = []
        self.config: dict[str, tuple[Any, str]] = {
            "loop.gate_threshold": (0.75, "default"),
            "redis.url": ("redis://127.0.0.1:6379/0", "flag"),
        }
        self.defaults = {k: v for k, (v, _) in self.config.items()}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def __enter__(self) -> FakeCfnd:
        self._listener.bind(str(self.path))
        self._listener.listen(512)
        self._listener.settimeout(POLL_S)
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        # Bounded: every thread polls the stop flag at least every POLL_S.
        for t in list(self._threads):
            t.join(timeout=5)
        self._listener.close()
        for conn in self._conns:
            conn.close()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(POLL_S)
            with self._lock:
                self._conns.append(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        decoder = FrameDecoder()
        write_lock = threading.Lock()
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            batch: list[Request] = []
            for item in decoder.feed(data):
                if isinstance(item, FrameFault):
                    self._write(conn, write_lock, error_response(None, item.error))
                    continue
                batch.append(parse_request(decode_body(item)))
            # Reversed: pipelined requests are answered out of order.
            for req in reversed(batch):
                with self._lock:
                    self.received.append(req)
                if not self._handle(conn, write_lock, req):
                    return

    def _write(self, conn: socket.socket, lock: threading.Lock, obj: Any) -> None:
        # OSError: the client left; there is nobody to tell.
        with lock, contextlib.suppress(OSError):
            conn.sendall(encode_frame(obj, "msgpack"))

    def _handle(self, conn: socket.socket, lock: threading.Lock, req: Request) -> bool:
        if req.op == "test.hangup":
            conn.shutdown(socket.SHUT_RDWR)
            return False
        if req.op == "test.never":
            return True
        if req.op == "test.slow":
            self._spawn(self._slow_reply, conn, lock, req)
            return True
        if req.op == "test.stream":
            for i in range(int(req.args["n"])):
                self._write(conn, lock, EventFrame(id=req.id, event={"seq": i}))
            self._write(conn, lock, Response(id=req.id, ok=True, result={"count": req.args["n"]}))
            return True
        try:
            result = self._result(req)
        except CfnError as err:
            self._write(conn, lock, error_response(req.id, err))
        else:
            self._write(conn, lock, Response(id=req.id, ok=True, result=result))
        return True

    def _slow_reply(self, conn: socket.socket, lock: threading.Lock, req: Request) -> None:
        self._stop.wait(req.args["ms"] / 1000)
        self._write(conn, lock, Response(id=req.id, ok=True, result={"slow": req.args["ms"]}))

    def _result(self, req: Request) -> Any:
        if req.op == "test.echo":
            return req.args
        if req.op == "test.error":
            a = req.args
            raise CfnError.from_wire(a["code"], a["message"], a.get("details"))
        spec = OPS.get(req.op)
        if spec is None:
            raise ProtocolError(f"unknown op {req.op!r}", code="unknown_op")
        args: Any = decode_args(spec.args, req.args)
        return getattr(self, "op_" + req.op.replace(".", "_"))(args)

    # -- canned ops

    def op_hello(self, args: Any) -> HelloResult:
        return HelloResult(
            protocol=self.protocol, server_version="9.9.9", pid=os.getpid(), uid=0,
            user="root", role="admin",
        )  # fmt: skip

    def op_ping(self, args: Any) -> PingResult:
        return PingResult(server_time_ms=int(time.time() * 1000))

    def op_status(self, args: StatusArgs) -> StatusResult:
        up = self.store_available
        return StatusResult(
            version="9.9.9", pid=os.getpid(), uptime_s=3725.0, started_at_ms=0,
            socket=str(self.path), state_dir="/tmp/state", config_sources=["defaults"],
            store=StoreStatus(
                mode="embedded", url="unix:///tmp/state/redis.sock", available=up,
                key_prefix="cfn", version="7.2.4" if up else None,
                latency_ms=0.25 if up else None, error=None if up else "Connection refused",
                retry_in_s=None if up else 2.0,
            ),
            swarms=SwarmCounts(total=3 if up else None),
            server=ServerStats(connections=1, requests_total=5, errors_total=0, inflight=1)
            if args.verbose else None,
        )  # fmt: skip

    def op_doctor(self, args: Any) -> DoctorResult:
        checks = [
            Check(name="redis.reachable", ok=self.doctor_ok, detail="embedded Redis",
                  fix="" if self.doctor_ok else "start Redis"),
            Check(name="redis.persistence", ok=False, warning=True, detail="no AOF",
                  fix="enable AOF"),
        ]  # fmt: skip
        return DoctorResult(ok=self.doctor_ok, checks=checks)

    def op_config_show(self, args: Any) -> ConfigShowResult:
        if args.key is not None and args.key not in self.config:
            raise NotFound(f"unknown config key {args.key!r}", details={"key": args.key})
        keys = [args.key] if args.key else sorted(self.config)
        entries = [
            ConfigEntry(key=k, value=self.config[k][0], source=self.config[k][1]) for k in keys
        ]
        return ConfigShowResult(entries=entries)

    def op_config_set(self, args: Any) -> ConfigSetResult:
        if not args.key.startswith("loop."):
            raise ConfigError(
                f"{args.key} cannot change at runtime; set it in the config file and restart cfnd",
                details={"key": args.key},
            )
        previous = self.config[args.key][0]
        self.config[args.key] = (float(args.value), "runtime")
        return ConfigSetResult(key=args.key, value=float(args.value), previous=previous)

    def op_config_reset(self, args: Any) -> ConfigResetResult:
        keys = (
            [args.key] if args.key else [k for k, (_, s) in self.config.items() if s == "runtime"]
        )
        for k in keys:
            self.config[k] = (self.defaults[k], "default")
        return ConfigResetResult(reset=keys)

    def op_config_validate(self, args: Any) -> ConfigValidateResult:
        if args.text is not None and "7.5" in args.text:
            raise ConfigError(
                f"{args.name}: key loop.gate_threshold = 7.5 is invalid: expected <= 1.0",
                details={"file": args.name, "key": "loop.gate_threshold", "value": 7.5,
                         "expected": "<= 1.0"},
            )  # fmt: skip
        return ConfigValidateResult(valid=True, source=args.name if args.text else "defaults")


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short private dir: Unix socket paths must stay under ~108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="cfnc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake_factory(sock_dir: Path) -> Iterator[Callable[..., FakeCfnd]]:
    """Start fakes on short socket paths; all are stopped at teardown."""
    fakes: list[FakeCfnd] = []

    def start(**kwargs: Any) -> FakeCfnd:
        fake = FakeCfnd(sock_dir / f"f{len(fakes)}.sock", **kwargs).__enter__()
        fakes.append(fake)
        return fake

    yield start
    for fake in fakes:
        fake.__exit__(None, None, None)


@pytest.fixture
def fake(fake_factory: Callable[..., FakeCfnd]) -> FakeCfnd:
    """One running fake cfnd."""
    return fake_factory()


# --------------------------------------------------------------------------- helpers


def test_args_to_wire_sends_only_non_defaults() -> None:
    assert args_to_wire(StatusArgs()) == {}
    assert args_to_wire(StatusArgs(verbose=True)) == {"verbose": True}
    assert args_to_wire({"x": 1}) == {"x": 1}
    assert args_to_wire(None) == {}


# --------------------------------------------------------------------------- sync


def test_sync_connect_handshakes_and_requests(fake: FakeCfnd) -> None:
    with SyncConnection(fake.path) as conn:
        assert conn.server is not None
        assert conn.server.server_version == "9.9.9"
        assert conn.request("test.echo", {"a": [1, 2]}) == {"a": [1, 2]}
        assert conn.request("ping")["pong"] is True
    assert fake.received[0].op == "hello"
    assert fake.received[0].args["client"].startswith("cfnctl/")
    assert [r.id for r in fake.received[:3]] == [1, 2, 3]


@pytest.mark.parametrize(
    ("code", "cls", "exit_code"),
    [
        ("not_found", NotFound, 1),
        ("permission_denied", PermissionDenied, 4),
        ("weird", CfnError, 1),
    ],
)
def test_sync_error_reply_raises_matching_class(
    fake: FakeCfnd, code: str, cls: type[CfnError], exit_code: int
) -> None:
    with SyncConnection(fake.path) as conn, pytest.raises(cls) as info:
        conn.request("test.error", {"code": code, "message": "nope", "details": {"k": 1}})
    assert type(info.value) is cls
    assert (info.value.message, info.value.details, info.value.exit_code) == (
        "nope", {"k": 1}, exit_code,
    )  # fmt: skip


def test_sync_timeout_then_late_reply_is_dropped(fake: FakeCfnd) -> None:
    with SyncConnection(fake.path) as conn:
        with pytest.raises(RequestTimeout, match=r"test\.slow"):
            conn.request("test.slow", {"ms": 150}, timeout_s=0.02)
        time.sleep(0.2)  # let the late reply arrive first
        assert conn.request("test.echo", {"after": True}) == {"after": True}


def test_sync_daemon_hangup_mid_request(fake: FakeCfnd) -> None:
    conn = SyncConnection(fake.path)
    conn.connect()
    with pytest.raises(DaemonUnreachable, match="closed the connection before answering"):
        conn.request("test.hangup")
    assert conn.closed
    with pytest.raises(DaemonUnreachable):
        conn.request("ping")
    conn.close()


def test_sync_stream_yields_events_then_result(fake: FakeCfnd) -> None:
    with SyncConnection(fake.path) as conn:
        with conn.stream("test.stream", {"n": 5}) as events:
            got = list(events)
        assert got == [{"seq": i} for i in range(5)]
        assert events.result == {"count": 5}
        assert conn.request("ping")["pong"] is True


def test_sync_stream_left_early_closes_the_connection(fake: FakeCfnd) -> None:
    with SyncConnection(fake.path) as conn:
        with conn.stream("test.stream", {"n": 50}) as events:
            assert next(events) == {"seq": 0}
            with pytest.raises(CfnError, match="busy with an open stream"):
                conn.request("ping")
        assert conn.closed


def test_protocol_mismatch_is_reported(fake_factory: Callable[..., FakeCfnd]) -> None:
    fake = fake_factory(protocol=2)
    with pytest.raises(ProtocolError, match="protocol 2") as info:
        SyncConnection(fake.path).connect()
    assert info.value.instance_code == "protocol_mismatch"


def test_stale_socket_is_unreachable(sock_dir: Path) -> None:
    path = sock_dir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # bound but never listening: what a crashed daemon leaves behind
    with pytest.raises(DaemonUnreachable, match="refused") as info:
        SyncConnection(path).connect()
    assert "systemctl start cfnd" in info.value.message
    assert str(path) in info.value.message


def test_regular_file_is_unreachable(sock_dir: Path) -> None:
    path = sock_dir / "file.sock"
    path.write_text("")
    with pytest.raises(DaemonUnreachable, match="is a regular file, not a socket"):
        SyncConnection(path).connect()


def test_client_typed_results_and_reconnect(fake: FakeCfnd) -> None:
    with Client(fake.path) as cfn:
        assert cfn.hello().role == "admin"
        assert isinstance(cfn.ping(), PingResult)
        st = cfn.status(verbose=True)
        assert (st.store.mode, st.swarms.total, st.server is not None) == ("embedded", 3, True)
        assert cfn.config_set("loop.gate_threshold", "0.8").value == 0.8
        shown = cfn.config_show("loop.gate_threshold").entries
        assert [(e.value, e.source) for e in shown] == [(0.8, "runtime")]
        assert cfn.config_reset().reset == ["loop.gate_threshold"]
        assert cfn.config_validate("[loop]\n", name="a.toml").source == "a.toml"
        assert cfn.doctor().checks[0].name == "redis.reachable"
        assert cfn.call("test.echo", x=1) == {"x": 1}  # unknown ops pass through raw
        with pytest.raises(DaemonUnreachable):
            cfn.call("test.hangup")
        assert cfn.ping().pong  # the next call reconnects


def test_client_checks_args_before_sending(fake: FakeCfnd) -> None:
    with Client(fake.path) as cfn:
        with pytest.raises(InvalidArgs, match="verbose"):
            cfn.call("status", verbose="yes")
        with pytest.raises(InvalidArgs, match="bogus"):
            cfn.call("ping", bogus=1)
    assert [r.op for r in fake.received] == ["hello"]


def test_every_op_has_a_client_method() -> None:
    # Adding an op to OPS without a method on both clients fails here.
    for op in OPS:
        name = op.replace(".", "_")
        assert callable(getattr(Client, name, None)), f"Client.{name} missing"
        assert callable(getattr(AsyncClient, name, None)), f"AsyncClient.{name} missing"


# --------------------------------------------------------------------------- async


async def test_async_pipelined_requests_are_correlated(fake: FakeCfnd) -> None:
    results: dict[int, Any] = {}
    async with AsyncConnection(fake.path) as conn:

        async def one(i: int) -> None:
            results[i] = await conn.request("test.echo", {"i": i})

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(one, i)
    assert results == {i: {"i": i} for i in range(200)}
    ids = [r.id for r in fake.received if r.op == "test.echo"]
    assert len(ids) == 200
    assert set(ids) == set(range(2, 202))


async def test_async_timeout_leaves_other_requests_alone(fake: FakeCfnd) -> None:
    async with AsyncConnection(fake.path) as conn:
        slow_error: list[BaseException] = []

        async def slow() -> None:
            try:
                await conn.request("test.slow", {"ms": 200}, timeout_s=0.02)
            except RequestTimeout as exc:
                slow_error.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)
            for i in range(20):
                assert await conn.request("test.echo", {"i": i}) == {"i": i}
        assert len(slow_error) == 1
        await anyio.sleep(0.25)  # the late reply arrives and must be dropped quietly
        assert (await conn.request("ping"))["pong"] is True


async def test_async_cancelled_request_leaves_connection_usable(fake: FakeCfnd) -> None:
    async with AsyncConnection(fake.path) as conn:
        with anyio.move_on_after(0.02):
            await conn.request("test.never", timeout_s=math.inf)
        assert (await conn.request("test.echo", {"ok": 1})) == {"ok": 1}
        assert not conn._pending


async def test_async_hangup_fails_every_pending_request(fake: FakeCfnd) -> None:
    errors: list[BaseException] = []
    async with AsyncConnection(fake.path) as conn:

        async def never() -> None:
            try:
                await conn.request("test.never")
            except DaemonUnreachable as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(never)
            await anyio.sleep(0.05)
            with pytest.raises(DaemonUnreachable):
                await conn.request("test.hangup")
        assert len(errors) == 5
        assert conn.closed
        with pytest.raises(DaemonUnreachable):
            await conn.request("ping")


async def test_async_close_fails_requests_still_pending(fake: FakeCfnd) -> None:
    errors: list[BaseException] = []

    async def waiter(conn: AsyncConnection, ready: anyio.Event) -> None:
        ready.set()
        try:
            await conn.request("test.never", timeout_s=math.inf)
        except CfnError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg, AsyncConnection(fake.path) as conn:
        ready = anyio.Event()
        tg.start_soon(waiter, conn, ready)
        await ready.wait()
        await anyio.sleep(0.02)
    assert len(errors) == 1
    assert "closed by the client" in str(errors[0])


async def test_async_stream_and_early_exit(fake: FakeCfnd) -> None:
    async with AsyncConnection(fake.path) as conn:
        async with conn.stream("test.stream", {"n": 4}) as events:
            got = [e async for e in events]
        assert got == [{"seq": i} for i in range(4)]
        assert events.result == {"count": 4}
        async with conn.stream("test.stream", {"n": 1000}) as events:
            async for event in events:
                assert event == {"seq": 0}
                break
        # Frames still coming for the abandoned stream are dropped; the connection works.
        assert (await conn.request("test.echo", {"x": 2})) == {"x": 2}


async def test_async_clients_many_connections(fake: FakeCfnd) -> None:
    counts: list[int] = []

    async def worker() -> None:
        async with AsyncClient(fake.path) as cfn:
            n = 0
            for i in range(20):
                if i % 2:
                    assert (await cfn.status()).store.mode == "embedded"
                else:
                    assert (await cfn.ping()).pong
                n += 1
            counts.append(n)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(worker)
    assert counts == [20] * 20


async def test_async_unreachable_and_not_connected(sock_dir: Path) -> None:
    with pytest.raises(DaemonUnreachable, match="CFN_SOCKET"):
        await AsyncConnection(sock_dir / "missing.sock").connect()
    with pytest.raises(CfnError, match="async with"):
        await AsyncClient(sock_dir / "missing.sock").ping()


async def test_async_connection_failing_handshake_cleans_up(
    fake_factory: Callable[..., FakeCfnd],
) -> None:
    fake = fake_factory(protocol=7)
    conn = AsyncConnection(fake.path)
    with pytest.raises(ProtocolError):
        await conn.connect()
    assert conn.closed


def test_message_decoding_errors_are_protocol_errors() -> None:
    from cfn_client.conn.base import decode_message
    from cfn_client.wire.protocol import Frame

    with pytest.raises(ProtocolError):
        decode_message(Frame("msgpack", msgspec.msgpack.encode({"ok": "maybe"})))
