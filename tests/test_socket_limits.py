"""Socket slots and buffers against a real cfnd with real sockets: idle connections
cannot lock clients out, slow or stuck frames are cut off, and memory held by partial
frames goes back to the OS once they are gone."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from cfn_client.api import Client
from cfn_client.wire.protocol import LENGTH_PREFIX, FrameDecoder, FrameFault, decode_body
from tests.conftest import SHARED_REDIS
from tests.daemon_proc import CfndProcess, cfnctl

CfndFactory = Callable[..., CfndProcess]


def _start(factory: CfndFactory, tmp_path: Path, daemon_toml: str) -> CfndProcess:
    conf = tmp_path / "cfnd.toml"
    conf.write_text(f"[daemon]\n{daemon_toml}\n")
    return factory("--config", str(conf), "--redis-url", SHARED_REDIS)


def _connect(proc: CfndProcess) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(proc.socket))
    return sock


def _closed_by_server(sock: socket.socket, timeout_s: float) -> tuple[bool, list[dict]]:
    """Read until EOF (True) or ``timeout_s`` (False); returns the frames seen too."""
    sock.settimeout(timeout_s)
    decoder = FrameDecoder(8 << 20)
    frames = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return False, frames
        except ConnectionResetError:
            return True, frames
        if not data:
            return True, frames
        for item in decoder.feed(data):
            assert not isinstance(item, FrameFault)
            frames.append(decode_body(item))
    return False, frames


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _server_connections(proc: CfndProcess) -> int:
    with Client(proc.socket, timeout_s=30) as client:
        stats = client.status().server
        assert stats is not None
        return stats.connections - 1  # not counting ourselves


def _busy_ops(proc: CfndProcess) -> list[object]:
    return [e for e in proc.log_events() if e.get("op") == "events.follow"]


def test_idle_connections_cannot_lock_clients_out(
    cfnd_factory: CfndFactory, tmp_path: Path
) -> None:
    proc = _start(cfnd_factory, tmp_path, "max_connections = 300\nmax_connections_per_uid = 100")
    idle = [_connect(proc) for _ in range(1_024)]
    try:
        # Over the per-uid cap every new connection closed the longest-idle one...
        started = time.monotonic()
        with Client(proc.socket, timeout_s=30) as client:
            assert client.ping().pong
        assert time.monotonic() - started < 10  # generous: the machine may be loaded
        assert _server_connections(proc) <= 100
        # ...the oldest first: they see EOF, the newest are still served.
        assert _closed_by_server(idle[0], 10)[0]
        newest = idle[-1]
        newest.sendall(b'{"id": 1, "op": "ping"}\n')
        closed, frames = _closed_by_server(newest, 2)
        assert not closed and frames and frames[0]["ok"], frames
    finally:
        for sock in idle:
            sock.close()
    assert proc.stop() == 0


def test_busy_connections_are_not_evicted(cfnd_factory: CfndFactory, tmp_path: Path) -> None:
    proc = _start(cfnd_factory, tmp_path, "max_connections_per_uid = 3")
    with Client(proc.socket, timeout_s=30) as setup:
        setup.swarm_init(topology="mesh", max_agents=2)
    busy = [_connect(proc) for _ in range(3)]
    try:
        for sock in busy:  # each follows the event stream: in flight, never idle
            body = msgspec.msgpack.encode({"id": 9, "op": "events.follow", "args": {}})
            sock.sendall(LENGTH_PREFIX.pack(len(body)) + body)
        deadline = time.monotonic() + 30
        while len(_busy_ops(proc)) < 3:  # bounded: until cfnd has read all three
            assert time.monotonic() < deadline, proc.log()[-2000:]
            time.sleep(0.05)
        refused = _connect(proc)
        assert _closed_by_server(refused, 10)[0]  # no room and nothing idle: refused
        refused.close()
        for sock in busy:
            assert not _closed_by_server(sock, 0.5)[0]  # still following
    finally:
        for sock in busy:
            sock.close()
    assert proc.stop() == 0


def test_idle_timeout_closes_quiet_connections_and_clients_reconnect(
    cfnd_factory: CfndFactory, tmp_path: Path
) -> None:
    proc = _start(cfnd_factory, tmp_path, "idle_timeout_s = 1.0")
    quiet = _connect(proc)
    started = time.monotonic()
    assert _closed_by_server(quiet, 15)[0]
    assert time.monotonic() - started >= 0.9
    quiet.close()
    with Client(proc.socket, timeout_s=30) as client:
        assert client.ping().pong
        first = client.hello().pid
        # Past the idle timeout cfnd has closed the link; the next call reconnects.
        time.sleep(1.5)
        assert client.ping().pong
        assert client.hello().pid == first
    assert proc.stop() == 0


@pytest.mark.parametrize("drip", [False, True])
def test_partial_frame_is_cut_off_with_an_error(
    cfnd_factory: CfndFactory, tmp_path: Path, drip: bool
) -> None:
    proc = _start(cfnd_factory, tmp_path, "frame_timeout_s = 1.0")
    sock = _connect(proc)
    sock.sendall(LENGTH_PREFIX.pack(1000) + b"\x81")
    started = time.monotonic()
    if drip:  # a byte now and then does not keep a frame alive
        sock.settimeout(0.3)
        for _ in range(30):
            try:
                if sock.recv(65536, socket.MSG_PEEK):
                    break
            except TimeoutError:
                sock.sendall(b"\xa1")
    closed, frames = _closed_by_server(sock, 15)
    assert closed
    assert time.monotonic() - started < 10
    assert frames and frames[0]["error"]["code"] == "truncated_frame"
    assert "not complete within 1s" in frames[0]["error"]["message"]
    sock.close()
    assert cfnctl(proc.socket, "ping").returncode == 0
    assert proc.stop() == 0


def test_partial_one_mib_frames_leave_no_memory_behind(
    cfnd_factory: CfndFactory, tmp_path: Path
) -> None:
    proc = _start(cfnd_factory, tmp_path, "frame_timeout_s = 120.0\nmax_connections_per_uid = 500")
    assert proc.proc is not None
    pid = proc.proc.pid
    assert cfnctl(proc.socket, "ping").returncode == 0
    base = _rss_mib(pid)
    conns = [_connect(proc) for _ in range(300)]
    declared = (1 << 20) - 16
    for sock in conns:
        sock.sendall(LENGTH_PREFIX.pack(declared))
    piece = b"\x00" * 16384
    # Interleaved, as many slow clients would: the worst case for heap fragmentation.
    for _ in range(declared // len(piece) - 1):
        for sock in conns:
            sock.sendall(piece)
    held = _rss_mib(pid)
    for sock in conns:
        sock.close()
    assert cfnctl(proc.socket, "ping").returncode == 0
    deadline = time.monotonic() + 20
    while (after := _rss_mib(pid)) > base + 40 and time.monotonic() < deadline:
        time.sleep(0.2)
    print(f"rss MiB: base {base:.0f}, 300 partial frames {held:.0f}, after close {after:.0f}")
    assert after <= base + 40, (base, held, after)
    assert proc.stop() == 0
