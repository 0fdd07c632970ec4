"""The embedded ``redis-server``: cfnd's private Redis when none is configured.

It listens only on a Unix socket (mode 0700, in a 0700 dir under the state dir), keeps
its data in an append-only file there, and is stopped when cfnd exits. It requires a
password, generated once and kept in ``<state dir>/redis/password`` (0600); the server
reads it from a 0600 config file there, never from argv (readable in /proc by anyone),
so a process of another user, or a task that only has the socket path, cannot use it. Linux also
sends it SIGTERM if cfnd dies without cleaning up (PR_SET_PDEATHSIG), and a server
left behind by an earlier cfnd is shut down cleanly before a new one starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import structlog

from cfn_client.wire.errors import ConfigError, StoreUnavailable
from cfn_daemon.settings.schema import RedisConfig
from cfn_daemon.store.agent_users import AgentUserFile

log = structlog.get_logger("cfn.store")

STOP_TIMEOUT_S = 10.0
KILL_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 2.0
LOG_TAIL_LINES = 20
# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS) including the NUL.
MAX_SOCKET_PATH = 103
_PR_SET_PDEATHSIG = 1
_PING = b"*1\r\n$4\r\nPING\r\n"
_SHUTDOWN = b"*1\r\n$8\r\nSHUTDOWN\r\n"
_INFO_SERVER = b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"


class EmbeddedStartError(StoreUnavailable):
    """The embedded ``redis-server`` exited or did not answer in time at start-up."""


class EmbeddedRedis:
    """Run a private ``redis-server`` for the lifetime of an ``async with`` block.

    >>> async with EmbeddedRedis(cfg, state_dir) as server:
    ...     client = redis.asyncio.Redis(unix_socket_path=str(server.socket_path))
    """

    def __init__(
        self, cfg: RedisConfig, state_dir: Path, *, stop_timeout_s: float = STOP_TIMEOUT_S
    ) -> None:
        self.cfg = cfg
        self.dir = Path(state_dir) / "redis"
        self.socket_path = self.dir / "redis.sock"
        self.pidfile = self.dir / "redis.pid"
        self.log_path = self.dir / "redis.log"
        self.password_file = self.dir / "password"
        self.conf_path = self.dir / "redis.conf"
        self.password = ""  # read or made at start()
        # Each local agent's own ACL user, declared again at every start of the server.
        self.agent_users = AgentUserFile(self.dir / "agent-users.json")
        self.stop_timeout_s = stop_timeout_s
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """``unix://<socket>``: the URL clients use to reach this server."""
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs, else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def returncode(self) -> int | None:
        """The exit code once the server has died on its own (a crash), else None."""
        return self._proc.returncode if self._proc is not None else None

    async def wait(self) -> int:
        """Wait until the server exits (e.g. to supervise it); returns its exit code."""
        if self._proc is None:
            raise RuntimeError("EmbeddedRedis is not running")
        return await self._proc.wait()

    async def __aenter__(self) -> EmbeddedRedis:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the server and return once it answers PING; raises ``ConfigError`` if
        the binary is missing, ``EmbeddedStartError`` if it exits or does not answer."""
        if self._proc is not None:
            raise RuntimeError("EmbeddedRedis is already started")
        binary = self._find_binary()
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH:
            raise ConfigError(
                f"embedded Redis socket path {self.socket_path} is longer than "
                f"{MAX_SOCKET_PATH} bytes (a Unix socket limit); use a shorter daemon.state_dir",
                details={"key": "daemon.state_dir", "value": str(self.socket_path)},
            )
        self._make_dir()
        self.password = self._load_password()
        await self._reap_stale()
        self._proc = await self._spawn(binary)
        try:
            await self._wait_ready(self._proc)
        except BaseException:
            await self.stop()
            raise
        log.info("embedded_redis_started", pid=self._proc.pid, socket=str(self.socket_path))

    async def stop(self) -> None:
        """SIGTERM (Redis then fsyncs its AOF), wait; SIGKILL if it does not exit in time."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            if proc is not None:
                await proc.wait()
            return
        try:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(self.stop_timeout_s):
                    await proc.wait()
            except TimeoutError:
                log.warning("embedded_redis_kill", pid=proc.pid, waited_s=self.stop_timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                async with asyncio.timeout(KILL_TIMEOUT_S):
                    await proc.wait()
        except BaseException:
            # Cancelled mid-shutdown: do not leave the server running behind us.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        log.info("embedded_redis_stopped", pid=proc.pid, returncode=proc.returncode)

    # ------------------------------------------------------------------ internals

    def _find_binary(self) -> str:
        binary = shutil.which(self.cfg.embedded_binary)
        if binary is None:
            name = self.cfg.embedded_binary
            raise ConfigError(
                f"{name} not found on PATH: install it (Debian/Ubuntu: apt-get install "
                "redis-server; macOS: brew install redis) or point cfnd at a Redis with "
                "CFN_REDIS_URL / [redis] url",
                details={"key": "redis.embedded_binary", "value": name},
            )
        return binary

    def _make_dir(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask and ignored for an existing dir.
        os.chmod(self.dir, 0o700)

    def _load_password(self) -> str:
        """The server's password: the one kept in the state dir (agents that outlive a
        cfnd restart still hold it), else a new one written there with mode 0600."""
        with contextlib.suppress(FileNotFoundError):
            kept = self.password_file.read_text(encoding="utf-8").strip()
            if kept:
                os.chmod(self.password_file, 0o600)
                return kept
        password = secrets.token_urlsafe(32)
        _write_private(self.password_file, password + "\n")
        return password

    def _args(self) -> list[str]:
        """The server's command line: only the 0600 config file (it holds the password)."""
        settings = [
            "port 0",
            f'unixsocket "{self.socket_path}"',
            "unixsocketperm 700",
            f'dir "{self.dir}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "daemonize no",
            f'pidfile "{self.pidfile}"',
            f'logfile "{self.log_path}"',
            f'requirepass "{self.password}"',
            *self.agent_users.config_lines(),
        ]
        _write_private(self.conf_path, "\n".join(settings) + "\n")
        return [str(self.conf_path)]

    def _auth(self) -> bytes:
        return _command("AUTH", self.password)

    async def _spawn(self, binary: str) -> asyncio.subprocess.Process:
        # stderr goes to the log too: config errors are printed before the logfile opens.
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            return await asyncio.create_subprocess_exec(
                binary,
                *self._args(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                # Own process group: a Ctrl-C for cfnd must not stop Redis before cfnd
                # has written its last state; cfnd stops it explicitly.
                start_new_session=True,
                preexec_fn=_child_setup(os.getpid()),
            )
        finally:
            os.close(log_fd)

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        timeout = self.cfg.embedded_startup_timeout_s
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            if proc.returncode is not None:
                raise self._start_error(f"redis-server exited with code {proc.returncode}", proc)
            if await _answers(self.socket_path, self._auth() + _PING, b"+OK\r\n+PONG"):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._start_error(f"redis-server did not answer PING in {timeout:g}s", proc)
            # Waiting on the process (not sleeping) notices an early exit at once.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(delay, left)):
                    await proc.wait()
            delay = min(delay * 2, 0.1)

    def _start_error(self, what: str, proc: asyncio.subprocess.Process) -> EmbeddedStartError:
        tail = _tail(self.log_path, LOG_TAIL_LINES)
        text = "\n".join(f"  {line}" for line in tail) or "  (log is empty)"
        return EmbeddedStartError(
            f"embedded Redis failed to start: {what}; last lines of {self.log_path}:\n{text}",
            details={
                "log": str(self.log_path),
                "log_tail": tail,
                "exit_code": proc.returncode,
                "retry_after_s": None,
            },
        )

    async def _reap_stale(self) -> None:
        """Stop a ``redis-server`` left running on our socket/pidfile by an earlier cfnd."""
        # AUTH first (a stale server of an older cfnd has no password: it answers an
        # error to AUTH and the command all the same).
        info = await _request(self.socket_path, self._auth() + _INFO_SERVER)
        if info is not None:
            # Whatever answers on a socket inside our 0700 dir was started for this
            # state dir, so SHUTDOWN goes to the right server by construction. It makes
            # Redis fsync the AOF and exit cleanly, unlike a signal sent to a stale pid.
            pid = _info_pid(info)
            log.warning("embedded_redis_stale", pid=pid, socket=str(self.socket_path))
            await _request(self.socket_path, self._auth() + _SHUTDOWN)
            if pid is not None:
                await self._terminate(pid, graceful_first=False)
        pid = _read_pid(self.pidfile)
        # A pidfile pid may have been reused: only a redis-server of ours is signalled.
        if pid is not None and self._is_ours(pid):
            log.warning("embedded_redis_stale", pid=pid, pidfile=str(self.pidfile))
            await self._terminate(pid, graceful_first=True)
        for leftover in (self.socket_path, self.pidfile):
            leftover.unlink(missing_ok=True)

    async def _terminate(self, pid: int, *, graceful_first: bool) -> None:
        """Wait for a foreign pid to exit, escalating SIGTERM then SIGKILL (bounded)."""
        if graceful_first:
            _signal(pid, signal.SIGTERM)
        if await _wait_gone(pid, self.stop_timeout_s):
            return
        if not graceful_first:
            _signal(pid, signal.SIGTERM)
            if await _wait_gone(pid, self.stop_timeout_s):
                return
        _signal(pid, signal.SIGKILL)
        if not await _wait_gone(pid, KILL_TIMEOUT_S):
            raise EmbeddedStartError(
                f"a stale embedded redis-server (pid {pid}) does not exit, even on SIGKILL",
                details={"pid": pid, "retry_after_s": None},
            )

    def _is_ours(self, pid: int) -> bool:
        """A live redis-server whose title names our socket or whose cwd is our dir."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        if b"redis-server" not in cmdline or not _alive(pid):
            return False
        if os.fsencode(self.socket_path) in cmdline:
            return True
        try:
            return Path(f"/proc/{pid}/cwd").resolve() == self.dir.resolve()
        except OSError:
            return False


def _command(*parts: str) -> bytes:
    """One RESP command."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (never more open, even briefly)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _child_setup(parent_pid: int) -> Callable[[], None]:
    """Runs in the forked child before exec: die with the parent, private files."""

    # Look prctl up before fork: dlopen in a child of a threaded process can deadlock.
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None

    def setup() -> None:
        os.umask(0o077)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            # The parent may have died between fork() and prctl(): then nobody
            # will ever send the signal, so act on it now.
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGTERM)

    return setup


async def _request(path: Path, command: bytes) -> bytes | None:
    """Send one RESP command on the Unix socket; the raw reply, or None if nobody answers."""
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                writer.write(command)
                await writer.drain()
                # A reply is one line, or a bulk string header + body; read what came,
                # and past the AUTH reply that comes first.
                data = await reader.read(64 * 1024)
                for _ in range(3):
                    if not data or data.count(b"\r\n") > 1:
                        break
                    more = await reader.read(64 * 1024)
                    if not more:
                        break
                    data += more
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return None
    return data


async def _answers(path: Path, command: bytes, expected: bytes) -> bool:
    reply = await _request(path, command)
    return reply is not None and reply.startswith(expected)


def _info_pid(reply: bytes) -> int | None:
    for line in reply.splitlines():
        if line.startswith(b"process_id:"):
            with contextlib.suppress(ValueError):
                return int(line.split(b":", 1)[1])
    return None


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (dead, merely not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): existence is all we can tell
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


async def _wait_gone(pid: int, limit_s: float) -> bool:
    """Poll (bounded) until ``pid`` exits; it is not our child, so it cannot be awaited."""
    deadline = time.monotonic() + limit_s
    delay = 0.005
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    return True


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16 * 1024))
            data = f.read()
    except OSError:
        return []
    return [line for line in data.decode("utf-8", "replace").splitlines() if line][-lines:]
