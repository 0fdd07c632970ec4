"""Scenario 5: socket storms — idle connections past every cap, slowloris, partial
1 MiB frames, pipelining without reading — while a client measures ping latency.
cfnd keeps answering it and gives the memory back afterwards."""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from cfn_client.api import Client
from cfn_client.wire.protocol import LENGTH_PREFIX
from tests.chaos.harness import Figures, Scale, rss_kb
from tests.daemon_proc import CfndProcess
from tests.waiting import wait_until

PING_LINE = b'{"id": 1, "op": "ping"}\n'


class Pinger(threading.Thread):
    """Pings on one connection, recording each round trip, until stopped (bounded)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.stop = path, threading.Event()
        self.latencies_s: list[float] = []
        self.failures: list[str] = []

    def run(self) -> None:
        with Client(self.path, timeout_s=10) as client:
            for _ in range(200_000):
                if self.stop.is_set():
                    return
                started = time.perf_counter()
                try:
                    assert client.ping().pong
                except Exception as exc:
                    self.failures.append(repr(exc))
                self.latencies_s.append(time.perf_counter() - started)
                time.sleep(0.01)  # a steady, light probe

    def p99_ms(self) -> float:
        return round(statistics.quantiles(self.latencies_s, n=100)[98] * 1000, 2)


@contextlib.contextmanager
def sockets(path: Path, n: int) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                sock.connect(str(path))
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def send_some(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError, OSError):
        sock.send(data)


def test_socket_storms_leave_a_well_behaved_client_answered(
    chaos_cfnd: Callable[..., CfndProcess], scale: Scale
) -> None:
    proc = chaos_cfnd(env={"CFN_DAEMON__FRAME_TIMEOUT_S": "2", "CFN_DAEMON__IDLE_TIMEOUT_S": "5"})
    assert proc.proc is not None
    pid = proc.proc.pid
    rss_before = rss_kb(pid)
    pinger = Pinger(proc.socket)
    pinger.start()
    fig = Figures("socket_storms")
    try:
        # 1. More idle connections than the per-uid and the global cap.
        with sockets(proc.socket, 1100 if scale.long else 400), Client(proc.socket) as fresh:
            assert fresh.ping().pong  # a newcomer still gets in
        # 2. Slowloris: frames trickling in a byte at a time.
        with sockets(proc.socket, 50) as slow:
            for byte in PING_LINE[:10]:
                for sock in slow:
                    send_some(sock, bytes([byte]))
                time.sleep(0.3)  # the attack's pace
        # 3. Partial 1 MiB frames, held open.
        half = b"\x00" * (512 << 10)
        header = LENGTH_PREFIX.pack((1 << 20) - 16) + b"\x83"  # a 1 MiB msgpack map
        with sockets(proc.socket, 400 if scale.long else 100) as partial:
            for sock in partial:
                sock.setblocking(True)
                sock.settimeout(5)
                with contextlib.suppress(OSError):
                    sock.sendall(header + half)
            fig.notes["rss_peak_mib"] = round(rss_kb(pid) / 1024, 1)
        # 4. Pipelining without ever reading a reply.
        flood = msgspec.json.encode({"id": 1, "op": "ping"}) + b"\n"
        with sockets(proc.socket, 5) as greedy:
            for sock in greedy:
                for _ in range(2000):
                    send_some(sock, flood)
            with Client(proc.socket, timeout_s=30) as fresh:
                assert fresh.ping().pong
        # Memory goes back once the storms are over.
        rss_limit_kb = rss_before + (96 << 10)
        wait_until(lambda: rss_kb(pid) < rss_limit_kb, 60, "cfnd's memory given back")
    finally:
        pinger.stop.set()
        pinger.join(30)
    fig.notes.update(
        rss_before_mib=round(rss_before / 1024, 1),
        rss_after_mib=round(rss_kb(pid) / 1024, 1),
        ping_p50_ms=round(statistics.median(pinger.latencies_s) * 1000, 2),
        ping_p99_ms=pinger.p99_ms(),
        pings=len(pinger.latencies_s),
    )
    fig.save()
    assert pinger.failures == [], pinger.failures[:5]
    assert pinger.p99_ms() < 2000, fig.notes
    assert proc.proc.poll() is None
    assert proc.stop() == 0
