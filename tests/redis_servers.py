"""Real ``redis-server`` processes for tests (never a fake): Unix socket or loopback TCP,
optional password, TLS (throwaway CA made with ``openssl``) or single-node cluster.

Import ``RedisFactory``/``RedisProcess`` directly, or the ``redis_factory`` fixture into
a conftest. Every server is stopped at teardown. Secrets go into a 0600 config file,
never into argv (which any local user can read in /proc).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client one."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Generate the CA and certificates with the ``openssl`` command line tool."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=cfn-test-ca", "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=cfn-test-{name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.crt")  # fmt: skip
    return TlsFiles(
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the caller retries on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pid_alive(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def wait_pid_gone(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Poll (bounded) until a process that is not our child has exited."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return True


class RedisProcess:
    """One ``redis-server``; ``stop()`` then ``start()`` restarts it on the same address."""

    def __init__(
        self,
        workdir: Path,
        *,
        tcp: bool = False,
        password: str | None = None,
        tls: TlsFiles | None = None,
        tls_auth_clients: bool = False,
        cluster: bool = False,
        extra_conf: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.tcp = tcp or tls is not None or cluster
        self.password = password
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        self.cluster = cluster
        self.extra_conf = list(extra_conf)
        self.socket_path = workdir / "redis.sock"
        self.log_path = workdir / "redis.log"
        self.port: int | None = None
        self.cluster_port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._slots_assigned = False

    # ---------------------------------------------------------------- addresses

    @property
    def url(self) -> str:
        """The URL a client uses (no password in it)."""
        if not self.tcp:
            return f"unix://{self.socket_path}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> RedisProcess:
        """Start (or restart on the same socket/port) and wait until it answers."""
        if self.running:
            raise RuntimeError("already running")
        fixed = self.port is not None
        for _attempt in range(5):
            if not fixed:
                self.port = free_port() if self.tcp else None
                self.cluster_port = free_port() if self.cluster else None
            self._write_conf()
            self._proc = subprocess.Popen(
                [REDIS_SERVER, str(self.workdir / "redis.conf")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            if self._wait_ready():
                break
            if fixed or "Address already in use" not in self._log_tail():
                raise RuntimeError(f"redis-server did not start:\n{self._log_tail()}")
        else:
            raise RuntimeError(f"redis-server found no free port:\n{self._log_tail()}")
        if self.cluster:
            self._cluster_ready()
        return self

    def stop(self) -> None:
        """SIGTERM and wait (bounded); SIGKILL if it hangs."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: a crash, no AOF flush."""
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)

    def client(self, **kwargs: object) -> redis.Redis:
        """A synchronous client for assertions; close it with ``.close()``."""
        opts: dict[str, object] = {"socket_timeout": 2.0, "password": self.password}
        if not self.tcp:
            opts["unix_socket_path"] = str(self.socket_path)
        else:
            opts.update(host="127.0.0.1", port=self.port)
        if self.tls:
            opts.update(ssl=True, ssl_ca_certs=str(self.tls.ca_cert))
            if self.tls_auth_clients:
                opts.update(
                    ssl_certfile=str(self.tls.client_cert), ssl_keyfile=str(self.tls.client_key)
                )
        opts.update(kwargs)
        return redis.Redis(**opts)  # type: ignore[arg-type]

    # ---------------------------------------------------------------- internals

    def _write_conf(self) -> None:
        lines = [
            f"dir {self.workdir}",
            f"logfile {self.log_path}",
            'save ""',
            "appendonly no",
            "daemonize no",
            "bind 127.0.0.1",
        ]
        if self.tcp and not self.tls:
            lines.append(f"port {self.port}")
        else:
            lines.append("port 0")
        if not self.tcp:
            lines += [f"unixsocket {self.socket_path}", "unixsocketperm 700"]
        if self.tls:
            lines += [
                f"tls-port {self.port}",
                f"tls-cert-file {self.tls.server_cert}",
                f"tls-key-file {self.tls.server_key}",
                f"tls-ca-cert-file {self.tls.ca_cert}",
                f"tls-auth-clients {'yes' if self.tls_auth_clients else 'no'}",
            ]
            if self.cluster:
                lines.append("tls-cluster yes")
        if self.password:
            lines.append(f'requirepass "{self.password}"')
        if self.cluster:
            lines += [
                "cluster-enabled yes",
                f"cluster-config-file {self.workdir / 'nodes.conf'}",
                f"cluster-port {self.cluster_port}",
            ]
        lines += self.extra_conf
        conf = self.workdir / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _wait_ready(self) -> bool:
        """Bounded: until PING gets any reply but LOADING, or the process exits."""
        assert self._proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._ping():
                return True
            try:
                # Waiting on the process (not sleeping) notices an early exit at once.
                self._proc.wait(timeout=0.02)
            except subprocess.TimeoutExpired:
                continue
            self._proc = None
            return False
        self._end(signal.SIGKILL)
        raise RuntimeError(f"redis-server not ready in {READY_TIMEOUT_S}s:\n{self._log_tail()}")

    def _ping(self) -> bool:
        client = self.client(socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        try:
            client.ping()
        except redis.BusyLoadingError:
            return False
        except redis.AuthenticationError:
            return True
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        finally:
            client.close()
        return True

    def _cluster_ready(self) -> None:
        """Give the single node every slot (first start) and wait for cluster_state:ok."""
        client = self.client()
        execute: Callable[..., Any] = client.execute_command
        try:
            if not self._slots_assigned:
                execute("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            deadline = time.monotonic() + READY_TIMEOUT_S
            # Redis holds a (re)started master out of the cluster for ~2 s.
            while b"cluster_state:ok" not in execute("CLUSTER", "INFO"):
                if time.monotonic() >= deadline:
                    raise RuntimeError("single-node cluster did not reach cluster_state:ok")
                time.sleep(0.01)
        finally:
            client.close()
        self._slots_assigned = True

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"


class RedisFactory:
    """Creates ``RedisProcess`` es in numbered subdirs of ``base``; stops all on exit."""

    def __init__(self, base: Path) -> None:
        # Unix socket paths are limited to ~107 bytes, so keep the dir short.
        self.base = base
        self.servers: list[RedisProcess] = []

    def __call__(self, *, start: bool = True, **kwargs: object) -> RedisProcess:
        server = RedisProcess(self.base / f"r{len(self.servers)}", **kwargs)  # type: ignore[arg-type]
        self.servers.append(server)
        return server.start() if start else server

    def close(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> RedisFactory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    """``redis_factory(password=..., tcp=True, tls=..., cluster=True)`` → a started server."""
    with RedisFactory(tmp_path) as factory:
        yield factory


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """A throwaway CA plus server and client certificates."""
    return make_tls_files(tmp_path / "tls")
