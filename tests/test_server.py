"""The socket server against an in-process daemon: framing, errors, pipelining, limits."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog.testing

from cfn_client.wire.errors import Conflict
from cfn_client.wire.protocol import (
    LENGTH_PREFIX,
    PROTOCOL_VERSION,
    FrameDecoder,
    FrameFault,
    Request,
    Role,
    decode_body,
    encode_frame,
)
from cfn_daemon.api.server import RoleResolver
from cfn_daemon.app import Daemon
from cfn_daemon.settings.schema import AuthConfig
from tests.conftest import DaemonFactory


class RawClient:
    """A bare socket client that shows exactly what the daemon sends back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder(8 << 20)
        self.pending: list[Any] = []

    @classmethod
    async def open(cls, path: Path) -> RawClient:
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, obj: Any, framing: str = "msgpack") -> None:
        await self.send_raw(encode_frame(obj, framing))  # type: ignore[arg-type]

    async def recv(self, timeout_s: float = 10.0) -> dict[str, Any] | None:
        """Next decoded frame, or None when the daemon closed the connection."""
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), timeout_s)
            if not data:
                return None
            for item in self.decoder.feed(data):
                assert not isinstance(item, FrameFault), item
                self.pending.append(decode_body(item))
        out: dict[str, Any] = self.pending.pop(0)
        return out

    async def call(self, op: str, framing: str = "msgpack", **args: Any) -> dict[str, Any]:
        await self.send(Request(id=1, op=op, args=args), framing)
        reply = await self.recv()
        assert reply is not None
        return reply

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def raw(daemon: Daemon) -> Any:
    client = await RawClient.open(daemon.socket_path)
    yield client
    await client.close()


async def test_ping_in_both_framings(raw: RawClient) -> None:
    for framing in ("json", "msgpack"):
        reply = await raw.call("ping", framing)
        assert reply["ok"] is True
        assert reply["result"]["pong"] is True


async def test_hello_and_protocol_mismatch(raw: RawClient) -> None:
    reply = await raw.call("hello", protocol=PROTOCOL_VERSION, client="test")
    assert reply["result"]["role"] == "admin"  # tests run as root or as cfnd's own user
    assert reply["result"]["uid"] == os.geteuid()
    reply = await raw.call("hello", protocol=99)
    assert reply["error"]["code"] == "protocol_mismatch"
    assert reply["error"]["details"] == {"client": 99, "server": PROTOCOL_VERSION}


async def test_json_lines_from_a_shell_script(daemon: Daemon) -> None:
    # What `printf '...' | socat - UNIX-CONNECT:sock` does: send, half-close, read.
    reader, writer = await asyncio.open_unix_connection(str(daemon.socket_path))
    writer.write(b'{"id": "a", "op": "ping"}\n\n{"id": "b", "op": "status"}\n')
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    replies = [msgspec.json.decode(line) for line in data.splitlines()]
    assert sorted(r["id"] for r in replies) == ["a", "b"]
    assert all(r["ok"] for r in replies)


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        ({"id": 5, "op": "pingg"}, "unknown_op", "did you mean ping"),
        (
            {"id": 5, "op": "status", "args": {"verbose": "yes"}},
            "invalid_args",
            "Expected `bool`, got `str` - at `$.verbose`",
        ),
        ({"id": 5, "op": "status", "args": {"loud": True}}, "invalid_args", "unknown field `loud`"),
        ({"id": 5, "op": 3}, "invalid_request", "Expected `str`, got `int`"),
        ({"id": 5}, "invalid_request", "missing required field `op`"),
    ],
)
async def test_specific_errors_keep_the_id(
    raw: RawClient, payload: dict[str, Any], code: str, fragment: str
) -> None:
    for framing in ("json", "msgpack"):
        await raw.send(payload, framing)
        reply = await raw.recv()
        assert reply is not None
        assert reply["ok"] is False
        assert reply["id"] == 5
        assert reply["error"]["code"] == code
        assert fragment in reply["error"]["message"]
    # The connection is still usable after each error.
    assert (await raw.call("ping"))["ok"]


async def test_garbage_json_and_non_utf8(raw: RawClient) -> None:
    await raw.send_raw(b"{not json at all\n")
    reply = await raw.recv()
    assert reply is not None and reply["error"]["code"] == "invalid_frame"
    await raw.send_raw(b'{"op": "\xff\xfe"}\n')
    reply = await raw.recv()
    assert reply is not None and "not valid UTF-8" in reply["error"]["message"]
    assert (await raw.call("ping", "json"))["ok"]


async def test_oversized_frame_is_rejected_and_connection_closed(raw: RawClient) -> None:
    body = b"\x00" * (2 << 20)
    await raw.send_raw(LENGTH_PREFIX.pack(len(body)))
    reply = await raw.recv()
    assert reply is not None
    assert reply["error"]["code"] == "frame_too_large"
    assert reply["error"]["details"]["max_frame_bytes"] == 1 << 20
    assert await raw.recv() is None


async def test_truncated_frame_gets_an_error_before_close(daemon: Daemon) -> None:
    reader, writer = await asyncio.open_unix_connection(str(daemon.socket_path))
    writer.write(LENGTH_PREFIX.pack(100) + b"only a few bytes")
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    (item,) = FrameDecoder().feed(data)
    reply = decode_body(item)  # type: ignore[arg-type]
    assert reply["error"]["code"] == "truncated_frame"
    assert "16 of 100" in reply["error"]["message"]


async def test_pipelined_requests_all_answered(raw: RawClient) -> None:
    n = 300
    await raw.send_raw(
        b"".join(encode_frame(Request(id=i, op="ping"), "msgpack") for i in range(n))
    )
    ids = set()
    for _ in range(n):
        reply = await raw.recv()
        assert reply is not None and reply["ok"]
        ids.add(reply["id"])
    assert ids == set(range(n))


async def test_socket_mode_and_stats(daemon: Daemon, raw: RawClient) -> None:
    mode = stat.S_IMODE(os.stat(daemon.socket_path).st_mode)
    assert mode == 0o660
    status = (await raw.call("status"))["result"]
    assert status["server"]["connections"] >= 1
    assert status["socket"] == str(daemon.socket_path)


async def test_second_daemon_on_same_socket_refuses(
    daemon: Daemon, daemon_factory: DaemonFactory
) -> None:
    with pytest.raises(Conflict, match=rf"another cfnd \(pid {os.getpid()}\) is serving"):
        await daemon_factory(**{"daemon.socket": str(daemon.socket_path)})
    # ...and the first one was not disturbed.
    client = await RawClient.open(daemon.socket_path)
    assert (await client.call("ping"))["ok"]
    await client.close()


async def test_second_daemon_on_same_state_dir_refuses(
    daemon: Daemon, daemon_factory: DaemonFactory
) -> None:
    with pytest.raises(Conflict, match="is using state dir"):
        await daemon_factory(**{"daemon.state_dir": str(daemon.state_dir)})


async def test_stale_socket_file_is_replaced(
    daemon_factory: DaemonFactory, short_tmp: Path
) -> None:
    path = short_tmp / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(path))
    leftover.close()  # the file stays, nobody listens: what a SIGKILLed cfnd leaves
    d = await daemon_factory(**{"daemon.socket": str(path)})
    client = await RawClient.open(d.socket_path)
    assert (await client.call("ping"))["ok"]
    await client.close()


async def test_refuses_to_replace_a_regular_file(
    daemon_factory: DaemonFactory, short_tmp: Path
) -> None:
    path = short_tmp / "not-a-socket"
    path.write_text("precious")
    with pytest.raises(Conflict, match="is not a socket"):
        await daemon_factory(**{"daemon.socket": str(path)})
    assert path.read_text() == "precious"


async def test_stop_drains_inflight_then_removes_socket(daemon: Daemon) -> None:
    raw = await RawClient.open(daemon.socket_path)
    assert (await raw.call("ping"))["ok"]
    daemon.request_stop()
    # A request arriving while draining gets a clear error rather than silence.
    await raw.send(Request(id=9, op="ping"))
    reply = await raw.recv()
    assert reply is None or reply["error"]["code"] == "shutting_down"
    await raw.close()


def test_role_resolver() -> None:
    nobody = 65534
    assert RoleResolver(AuthConfig()).resolve(0, 0) == ("root", Role.admin)
    assert RoleResolver(AuthConfig()).resolve(nobody, nobody)[1] == Role.none
    assert RoleResolver(AuthConfig(viewer_users=["nobody"])).resolve(nobody, nobody)[1] == (
        Role.viewer
    )
    assert RoleResolver(AuthConfig(admin_users=["nobody"])).resolve(nobody, nobody)[1] == (
        Role.admin
    )
    assert RoleResolver(AuthConfig(default_role="viewer")).resolve(nobody, nobody)[1] == (
        Role.viewer
    )


async def test_sigterm_drain_answers_inflight_requests(daemon_factory: DaemonFactory) -> None:
    d = await daemon_factory(**{"daemon.shutdown_grace_s": 10.0})
    entered, release = asyncio.Event(), asyncio.Event()

    def slow(original: Any) -> Any:
        async def slow_ping(ctx: Any, args: Any) -> Any:
            entered.set()
            await release.wait()
            return await original(ctx, args)

        return slow_ping

    d.router.wrap("ping", slow)
    raw = await RawClient.open(d.socket_path)
    await raw.send(Request(id=1, op="ping"))
    await entered.wait()
    d.request_stop()
    # While draining, a new request is refused with a specific error...
    await raw.send(Request(id=2, op="status"))
    refused = await raw.recv()
    assert refused is not None
    assert (refused["id"], refused["error"]["code"]) == (2, "shutting_down")
    # ...and the one in flight still gets its answer.
    release.set()
    answered = await raw.recv()
    assert answered is not None
    assert (answered["id"], answered["ok"]) == (1, True)
    await raw.close()


async def test_grace_expiry_cancels_and_logs_what_was_running(
    daemon_factory: DaemonFactory,
) -> None:
    d = await daemon_factory(**{"daemon.shutdown_grace_s": 0.2, "daemon.shutdown_hard_s": 5.0})
    entered = asyncio.Event()

    async def stuck(ctx: Any, args: Any) -> Any:
        entered.set()
        await asyncio.Event().wait()  # never finishes by itself

    d.router.wrap("doctor", lambda _original: stuck)
    raw = await RawClient.open(d.socket_path)
    await raw.send(Request(id=1, op="doctor"))
    await entered.wait()
    with structlog.testing.capture_logs() as logs:
        d.request_stop()
        reply = await raw.recv()  # cancelled after the grace period, and told so
        assert reply is not None
        assert reply["error"]["code"] == "shutting_down"
        assert "grace period ran out" in reply["error"]["message"]
        assert await raw.recv() is None
    await raw.close()
    expired = [e for e in logs if e["event"] == "shutdown_grace_expired"]
    assert [e["still_running"] for e in expired] == [["doctor"]]


async def test_embedded_redis_is_restarted_after_a_crash(daemon_factory: DaemonFactory) -> None:
    d = await daemon_factory(redis_url=None)
    embedded = d.store.embedded
    assert embedded is not None
    old_pid = embedded.pid
    assert old_pid is not None
    os.kill(old_pid, 9)
    await asyncio.wait_for(d.store.wait_unavailable(), 10)
    await asyncio.wait_for(d.store.wait_available(), 20)
    assert embedded.pid not in (None, old_pid)
    raw = await RawClient.open(d.socket_path)
    status = (await raw.call("status"))["result"]
    assert status["store"]["available"] is True
    assert status["store"]["embedded_pid"] == embedded.pid
    await raw.close()
