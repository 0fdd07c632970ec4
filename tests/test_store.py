"""cfn_daemon.store against real redis-server processes (embedded, external, TLS, cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    MaxConnectionsError,
    NoPermissionError,
    RedisClusterException,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from structlog.testing import capture_logs

from cfn_client.wire.errors import ConfigError, StoreUnavailable
from cfn_daemon.settings.schema import RedisConfig
from cfn_daemon.store import EmbeddedRedis, EmbeddedStartError, Store
from cfn_daemon.store.client import is_unavailable_error
from tests.redis_servers import (
    RedisFactory,
    RedisProcess,
    TlsFiles,
    make_tls_files,
    pid_alive,
    wait_pid_gone,
)

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"
WAIT_S = 10.0  # upper bound for any state change; tests normally take milliseconds
PASSWORD = "t0p-s3cret-pw"


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    with RedisFactory(tmp_path) as factory:
        yield factory


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def fast_cfg(**kwargs: Any) -> RedisConfig:
    """Short intervals so outages are noticed in milliseconds."""
    opts: dict[str, Any] = {
        "key_prefix": f"cfntest-{uuid.uuid4().hex[:12]}",
        "health_interval_s": 0.05,
        "retry_base_s": 0.01,
        "retry_max_s": 0.2,
        "connect_timeout_s": 1.0,
        "command_timeout_s": 2.0,
    }
    opts.update(kwargs)
    return RedisConfig(**opts)


@contextlib.asynccontextmanager
async def health_running(store: Store) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``store.run_health`` as the daemon does; stop it (and check it ended) on exit."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(store.run_health(stop))
        try:
            yield task
        finally:
            stop.set()


async def roundtrip(store: Store, value: bytes = b"v") -> bytes | None:
    key = f"{store.keys.prefix}:probe"
    async with store.guard():
        await store.redis.set(key, value, ex=60)
        got = await store.redis.get(key)
        await store.redis.delete(key)
    assert got is None or isinstance(got, bytes)
    return got


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# --------------------------------------------------------------------------- error classes


def _caused(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause  # what `raise exc from cause` leaves behind
    return exc


@pytest.mark.parametrize(
    ("exc", "outage"),
    [
        (RedisConnectionError("refused"), True),
        (AuthenticationError("invalid password"), True),
        (BusyLoadingError("LOADING"), True),
        (RedisTimeoutError("Timeout reading from socket"), True),
        (TimeoutError(), True),
        (ConnectionRefusedError(111, "refused"), True),
        (ClusterDownError("CLUSTERDOWN"), True),
        (_caused(RedisClusterException("cannot be connected"), RedisConnectionError()), True),
        (RedisClusterException("All slots are not covered after query all startup_nodes."), True),
        (ResponseError("WRONGTYPE"), False),
        (NoPermissionError("NOPERM"), False),
        (RedisClusterException("No way to dispatch this command"), False),
        (MaxConnectionsError("Too many connections"), False),
        (_caused(RedisConnectionError("No connection available."), TimeoutError()), False),
        (ValueError("x"), False),
    ],
)
def test_error_classification(exc: BaseException, outage: bool) -> None:
    assert is_unavailable_error(exc) is outage


# --------------------------------------------------------------------------- embedded server


async def test_embedded_server_lifecycle(state_dir: Path) -> None:
    cfg = fast_cfg()
    async with EmbeddedRedis(cfg, state_dir) as server:
        pid = server.pid
        assert pid is not None
        assert pid_alive(pid)
        assert server.url == f"unix://{state_dir / 'redis' / 'redis.sock'}"
        assert stat.S_IMODE(os.stat(state_dir / "redis").st_mode) == 0o700
        assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o700
        # Private process group: a Ctrl-C aimed at cfnd does not reach Redis.
        assert os.getpgid(pid) != os.getpgid(0)
        client = aioredis.Redis(unix_socket_path=str(server.socket_path), password=server.password)
        try:
            assert await client.ping()
            conf = await client.config_get("*")
            assert conf["appendonly"] == "yes"
            assert conf["appendfsync"] == "everysec"
            assert conf["save"] == ""
            assert conf["port"] == "0"
            await client.set(f"{cfg.key_prefix}:k", b"kept")
        finally:
            await client.aclose()
    assert server.pid is None
    assert not pid_alive(pid)
    assert not server.socket_path.exists()
    assert (state_dir / "redis" / "redis.log").stat().st_mode & 0o077 == 0

    # The AOF brings the data back on the next start.
    async with EmbeddedRedis(cfg, state_dir) as server:
        client = aioredis.Redis(unix_socket_path=str(server.socket_path), password=server.password)
        try:
            assert await client.get(f"{cfg.key_prefix}:k") == b"kept"
        finally:
            await client.aclose()


async def test_stale_embedded_server_is_shut_down_cleanly(state_dir: Path) -> None:
    cfg = fast_cfg()
    async with EmbeddedRedis(cfg, state_dir) as old:
        old_pid = old.pid
        assert old_pid is not None
        client = aioredis.Redis(unix_socket_path=str(old.socket_path), password=old.password)
        try:
            await client.set("written-before-restart", b"1")
        finally:
            await client.aclose()
        # A second cfnd on the same state dir finds the first one's server running.
        with capture_logs() as logs:
            async with EmbeddedRedis(cfg, state_dir) as new:
                assert not pid_alive(old_pid)
                assert new.pid not in (None, old_pid)
                client = aioredis.Redis(
                    unix_socket_path=str(new.socket_path), password=new.password
                )
                try:
                    # SHUTDOWN flushed the AOF, so nothing was lost.
                    assert await client.get("written-before-restart") == b"1"
                finally:
                    await client.aclose()
        assert any(e["event"] == "embedded_redis_stale" and e["pid"] == old_pid for e in logs)


async def test_hung_stale_server_from_pidfile_is_killed(state_dir: Path) -> None:
    cfg = fast_cfg()
    first = EmbeddedRedis(cfg, state_dir)
    await first.start()
    stale_pid = first.pid
    assert stale_pid is not None
    # Frozen: it accepts connections but never answers, so only the pidfile finds it.
    os.kill(stale_pid, signal.SIGSTOP)
    try:
        async with EmbeddedRedis(cfg, state_dir, stop_timeout_s=0.5) as server:
            assert not pid_alive(stale_pid)
            assert server.pid != stale_pid
            client = aioredis.Redis(
                unix_socket_path=str(server.socket_path), password=server.password
            )
            try:
                assert await client.ping()
            finally:
                await client.aclose()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stale_pid, signal.SIGKILL)
        await first.stop()


async def test_missing_binary_gives_a_fix(state_dir: Path) -> None:
    cfg = fast_cfg(embedded_binary="redis-server-not-installed")
    with pytest.raises(ConfigError) as info:
        async with EmbeddedRedis(cfg, state_dir):
            pass
    message = str(info.value)
    assert "redis-server-not-installed not found on PATH" in message
    assert "apt-get install redis-server" in message
    assert "brew install redis" in message
    assert "CFN_REDIS_URL / [redis] url" in message
    with pytest.raises(ConfigError, match="not found on PATH"):
        async with Store.open(cfg, state_dir, {}):
            pass


async def test_default_message_names_redis_server(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(state_dir))
    with pytest.raises(ConfigError) as info:
        async with EmbeddedRedis(RedisConfig(), state_dir):
            pass
    assert str(info.value).startswith(
        "redis-server not found on PATH: install it (Debian/Ubuntu: apt-get install "
        "redis-server; macOS: brew install redis) or point cfnd at a Redis with "
        "CFN_REDIS_URL / [redis] url"
    )


async def test_early_exit_reports_the_log(tmp_path: Path, state_dir: Path) -> None:
    # The real redis-server, given a directive it rejects.
    wrapper = tmp_path / "bad-redis"
    wrapper.write_text('#!/bin/sh\nexec redis-server "$@" --no-such-directive yes\n')
    wrapper.chmod(0o755)
    with pytest.raises(EmbeddedStartError) as info:
        async with Store.open(fast_cfg(embedded_binary=str(wrapper)), state_dir, {}):
            pass
    assert "exited with code 1" in str(info.value)
    assert "Bad directive" in str(info.value)
    assert info.value.details["exit_code"] == 1
    assert info.value.code == "store_unavailable"


async def test_killed_owner_leaves_no_orphan(state_dir: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        from pathlib import Path
        from cfn_daemon.settings.schema import RedisConfig
        from cfn_daemon.store import EmbeddedRedis

        async def main() -> None:
            async with EmbeddedRedis(RedisConfig(), Path(sys.argv[1])) as server:
                print(f"redis-pid={server.pid}", flush=True)
                await asyncio.Event().wait()

        asyncio.run(main())
        """
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(state_dir), stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        async with asyncio.timeout(WAIT_S):
            line = b""
            while not line.startswith(b"redis-pid="):  # skip structlog's lines
                line = await child.stdout.readline()
                assert line, "child exited early"
        redis_pid = int(line.removeprefix(b"redis-pid="))
        assert pid_alive(redis_pid)
    finally:
        child.kill()  # SIGKILL: no cleanup code runs in the child
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    assert await asyncio.to_thread(wait_pid_gone, redis_pid, WAIT_S), "redis-server orphaned"
    # And the state dir is usable again straight away.
    async with EmbeddedRedis(RedisConfig(), state_dir) as server:
        assert server.pid is not None


# --------------------------------------------------------------------------- Store: embedded


async def test_store_embedded(state_dir: Path) -> None:
    cfg = fast_cfg()
    async with Store.open(cfg, state_dir, {}) as store:
        assert store.mode == "embedded"
        assert store.available
        assert store.embedded is not None
        assert store.display_url == store.embedded.url
        assert store.keys.prefix == cfg.key_prefix
        assert await roundtrip(store) == b"v"
        status = await store.status()
        assert status.mode == "embedded"
        assert status.available
        assert status.url == store.embedded.url
        assert status.key_prefix == cfg.key_prefix
        assert status.version is not None
        assert status.version[0].isdigit()
        assert status.latency_ms is not None
        assert status.latency_ms >= 0
        assert status.error is None
        assert status.retry_in_s is None
        assert status.embedded_pid == store.embedded.pid
        assert status.aof_enabled is True
        assert status.rdb_saves == ""
        pid = store.embedded.pid
    assert pid is not None
    assert not pid_alive(pid)


async def test_store_reports_a_crashed_embedded_server(state_dir: Path) -> None:
    async with Store.open(fast_cfg(), state_dir, {}) as store, health_running(store):
        assert store.embedded is not None
        assert store.embedded.pid is not None
        os.kill(store.embedded.pid, signal.SIGKILL)
        async with asyncio.timeout(WAIT_S):
            assert await store.embedded.wait() == -signal.SIGKILL
            await store.wait_unavailable()
        status = await store.status()
        assert status.embedded_pid is None
        assert status.error is not None
        assert "embedded redis-server exited with code -9" in status.error
        assert str(store.embedded.log_path) in status.error
        with pytest.raises(StoreUnavailable, match="exited"):
            store.check()


async def test_store_embedded_rejects_external_settings(state_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"redis\.username"):
        async with Store.open(fast_cfg(username="cfn"), state_dir, {}):
            pass


# --------------------------------------------------------------------------- Store: external


async def test_store_external_shared_tcp(state_dir: Path) -> None:
    cfg = fast_cfg(url=SHARED_REDIS_URL)
    async with Store.open(cfg, state_dir, {}) as store:
        assert (store.mode, store.embedded, store.available) == ("external", None, True)
        assert await roundtrip(store, b"tcp") == b"tcp"
        status = await store.status()
        assert status.mode == "external"
        assert status.url == SHARED_REDIS_URL
        assert status.embedded_pid is None
        assert isinstance(status.aof_enabled, bool)
    assert not (state_dir / "redis").exists()


async def test_store_external_unix(redis_factory: RedisFactory, state_dir: Path) -> None:
    server = redis_factory()
    async with Store.open(fast_cfg(url=server.url), state_dir, {}) as store:
        assert store.available
        assert await roundtrip(store) == b"v"
        # Command errors pass through the guard and do not mark the store down.
        key = f"{store.keys.prefix}:list"

        async def wrong_type() -> None:
            async with store.guard():
                await store.redis.lpush(key, b"x")
                await store.redis.incr(key)

        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await wrong_type()
        await store.redis.delete(key)
        assert store.available
        status = await store.status()
        assert (status.aof_enabled, status.rdb_saves) == (False, "")


async def test_password_from_env(redis_factory: RedisFactory, state_dir: Path) -> None:
    server = redis_factory(password=PASSWORD)
    cfg = fast_cfg(url=server.url)
    with capture_logs() as logs:
        async with Store.open(cfg, state_dir, {"CFN_REDIS_PASSWORD": PASSWORD}) as store:
            assert store.available
            assert store.params.password_source == "env"
            assert await roundtrip(store) == b"v"
            status = await store.status()
    assert PASSWORD not in repr(logs)
    assert PASSWORD not in repr(status)
    assert server.pid is not None
    assert PASSWORD.encode() not in _cmdline(server.pid)  # the server got it from a file


async def test_password_from_file(
    redis_factory: RedisFactory, state_dir: Path, tmp_path: Path
) -> None:
    server = redis_factory(password=PASSWORD)
    pw_file = tmp_path / "redis.pw"
    pw_file.write_text(PASSWORD + "\n")
    pw_file.chmod(0o600)
    cfg = fast_cfg(url=server.url, password_file=str(pw_file))
    async with Store.open(cfg, state_dir, {}) as store:
        assert store.available
        assert store.params.password_source == "file"
        assert await roundtrip(store) == b"v"


async def test_password_in_url_is_redacted(redis_factory: RedisFactory, state_dir: Path) -> None:
    server = redis_factory(tcp=True, password=PASSWORD)
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    async with Store.open(fast_cfg(url=url), state_dir, {}) as store:
        assert store.available
        assert store.display_url == f"redis://:***@127.0.0.1:{server.port}/0"
        assert (await store.status()).url == store.display_url


async def test_missing_or_wrong_password_reports_unavailable(
    redis_factory: RedisFactory, state_dir: Path
) -> None:
    server = redis_factory(password=PASSWORD)
    for env in ({}, {"CFN_REDIS_PASSWORD": "wrong"}):
        async with Store.open(fast_cfg(url=server.url), state_dir, env) as store:
            assert not store.available
            status = await store.status()
            assert status.available is False
            assert status.error is not None
            assert "auth" in status.error.lower() or "password" in status.error
            with pytest.raises(StoreUnavailable):
                store.check()


async def test_unreadable_password_file_fails_open(state_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pw"
    cfg = fast_cfg(url=SHARED_REDIS_URL, password_file=str(missing))
    with pytest.raises(ConfigError, match=str(missing)):
        async with Store.open(cfg, state_dir, {}):
            pass


@pytest.mark.parametrize(
    "extra_conf",
    [
        pytest.param(['rename-command CONFIG ""'], id="config-renamed"),
        pytest.param(
            ["user default off", f"user cfn on >{PASSWORD} ~* &* +@all -config"],
            id="config-acl-denied",
        ),
    ],
)
async def test_status_without_config_command(
    redis_factory: RedisFactory, state_dir: Path, extra_conf: list[str]
) -> None:
    server = redis_factory(extra_conf=extra_conf)
    acl = any(line.startswith("user") for line in extra_conf)
    cfg = fast_cfg(url=server.url, username="cfn" if acl else None)
    env = {"CFN_REDIS_PASSWORD": PASSWORD} if acl else {}
    async with Store.open(cfg, state_dir, env) as store:
        assert store.available
        status = await store.status()
        assert status.rdb_saves is None
        assert status.aof_enabled is False
        assert status.version is not None
        assert store.available


# --------------------------------------------------------------------------- outages


async def test_outage_and_recovery_without_a_new_store(
    redis_factory: RedisFactory, state_dir: Path
) -> None:
    server = redis_factory()
    with capture_logs() as logs:
        async with (
            Store.open(fast_cfg(url=server.url), state_dir, {}) as store,
            health_running(store),
        ):
            up = await store.status()
            assert up.available
            server.stop()
            async with asyncio.timeout(WAIT_S):
                await store.wait_unavailable()
            assert not store.available
            with pytest.raises(StoreUnavailable) as info:
                store.check()
            assert server.url in info.value.message
            assert info.value.details["retry_after_s"] is not None
            assert info.value.details["retry_after_s"] >= 0
            with pytest.raises(StoreUnavailable):
                async with store.guard():
                    await store.redis.ping()
            down = await store.status()
            assert down.available is False
            assert down.error is not None
            assert down.retry_in_s is not None
            assert down.latency_ms is None
            assert down.aof_enabled is None
            assert down.version == up.version  # last known

            server.start()
            async with asyncio.timeout(WAIT_S):
                await store.wait_available()
            assert await roundtrip(store) == b"v"
            again = await store.status()
            assert again.available
            assert again.error is None
            assert again.retry_in_s is None
    events = [e["event"] for e in logs]
    assert "store_unavailable" in events
    assert events.index("store_available", events.index("store_unavailable")) > 0
    unavailable = next(e for e in logs if e["event"] == "store_unavailable")
    assert unavailable["log_level"] == "warning"
    assert {"error", "retry_in_s", "url"} <= unavailable.keys()


async def test_guard_failure_triggers_an_immediate_probe(
    redis_factory: RedisFactory, state_dir: Path
) -> None:
    server = redis_factory()
    # A 60 s interval: only the guard's wake-up can explain a fast reaction.
    cfg = fast_cfg(url=server.url, health_interval_s=60.0)
    async with Store.open(cfg, state_dir, {}) as store, health_running(store):
        assert await roundtrip(store) == b"v"
        server.stop()
        with pytest.raises(StoreUnavailable) as info:
            async with store.guard():
                await store.redis.ping()
        assert info.value.__cause__ is not None
        assert is_unavailable_error(info.value.__cause__)
        assert not store.available
        server.start()
        async with asyncio.timeout(WAIT_S):
            await store.wait_available()
        assert await roundtrip(store) == b"v"


async def test_external_down_at_open(redis_factory: RedisFactory, state_dir: Path) -> None:
    server = redis_factory(start=False)
    with capture_logs() as logs:
        async with Store.open(fast_cfg(url=server.url), state_dir, {}) as store:
            assert not store.available
            status = await store.status()
            assert (status.available, status.version, status.latency_ms) == (False, None, None)
            assert status.error is not None
            assert status.retry_in_s is not None
            with pytest.raises(StoreUnavailable):
                async with store.guard():
                    pytest.fail("guard must not run the body while unavailable")
            async with health_running(store):
                server.start()
                async with asyncio.timeout(WAIT_S):
                    await store.wait_available()
                assert await roundtrip(store) == b"v"
    opened = next(e for e in logs if e["event"] == "store_opened")
    assert opened["available"] is False


async def test_run_health_returns_promptly_on_stop(
    redis_factory: RedisFactory, state_dir: Path
) -> None:
    server = redis_factory()
    cfg = fast_cfg(url=server.url, connect_timeout_s=30.0, command_timeout_s=30.0)
    async with Store.open(cfg, state_dir, {}) as store:
        assert server.pid is not None
        # Frozen server: the loop's first PING hangs (up to 60 s with these timeouts).
        os.kill(server.pid, signal.SIGSTOP)
        try:
            stop = asyncio.Event()
            task = asyncio.create_task(store.run_health(stop))
            try:
                await asyncio.sleep(0)  # the task runs up to its first wait: the probe
                assert not task.done()
                stop.set()
                async with asyncio.timeout(2.0):
                    await task
            finally:
                task.cancel()
                await asyncio.wait({task})
        finally:
            os.kill(server.pid, signal.SIGCONT)


async def test_pool_exhaustion_is_not_an_outage(
    redis_factory: RedisFactory, state_dir: Path
) -> None:
    server = redis_factory()
    cfg = fast_cfg(url=server.url, pool_size=1, command_timeout_s=0.2)
    async with Store.open(cfg, state_dir, {}) as store:
        assert isinstance(store.redis, aioredis.Redis)
        pool = store.redis.connection_pool
        held = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            with pytest.raises(StoreUnavailable) as info:
                async with store.guard():
                    await store.redis.ping()
            assert info.value.details["reason"] == "pool_exhausted"
            assert store.available
        finally:
            await pool.release(held)
        assert await roundtrip(store) == b"v"


# --------------------------------------------------------------------------- TLS and cluster


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


async def test_tls(redis_factory: RedisFactory, state_dir: Path, tls_files: TlsFiles) -> None:
    server = redis_factory(tls=tls_files)
    assert server.url.startswith("rediss://127.0.0.1:")
    cfg = fast_cfg(url=server.url, tls_ca_file=str(tls_files.ca_cert))
    async with Store.open(cfg, state_dir, {}) as store:
        assert store.available
        assert store.params.tls
        assert await roundtrip(store) == b"v"
    # Without our CA the server certificate is not trusted.
    async with Store.open(fast_cfg(url=server.url), state_dir, {}) as store:
        assert not store.available
        assert "certificate" in str((await store.status()).error).lower()


async def test_mutual_tls(
    redis_factory: RedisFactory, state_dir: Path, tls_files: TlsFiles
) -> None:
    server = redis_factory(tls=tls_files, tls_auth_clients=True)
    ca = str(tls_files.ca_cert)
    async with Store.open(fast_cfg(url=server.url, tls_ca_file=ca), state_dir, {}) as store:
        assert not store.available  # no client certificate
    cfg = fast_cfg(
        url=server.url,
        tls_ca_file=ca,
        tls_cert_file=str(tls_files.client_cert),
        tls_key_file=str(tls_files.client_key),
    )
    async with Store.open(cfg, state_dir, {}) as store:
        assert store.available
        assert await roundtrip(store) == b"v"


async def test_cluster(redis_factory: RedisFactory, state_dir: Path) -> None:
    # One server for both forms: a cluster node needs ~2 s after start to accept writes.
    server: RedisProcess = redis_factory(cluster=True)
    node = f"127.0.0.1:{server.port}"
    for cfg in (
        fast_cfg(url=f"redis+cluster://{node}"),
        fast_cfg(cluster_nodes=[f"redis://{node}"]),
    ):
        await _check_cluster_store(cfg, state_dir)


async def _check_cluster_store(cfg: RedisConfig, state_dir: Path) -> None:
    async with Store.open(cfg, state_dir, {}) as store:
        assert store.mode == "cluster"
        assert store.available
        key = store.keys.swarm_state("s1")
        async with store.guard():
            await store.redis.hset(key, mapping={"status": "ok"})
            assert await store.redis.hget(key, "status") == b"ok"
            await store.redis.delete(key)
        status = await store.status()
        assert status.mode == "cluster"
        assert status.available
        assert status.version is not None
        assert (status.aof_enabled, status.rdb_saves) == (False, "")


async def test_cluster_outage_and_recovery(redis_factory: RedisFactory, state_dir: Path) -> None:
    server = redis_factory(cluster=True)
    cfg = fast_cfg(url=f"redis+cluster://127.0.0.1:{server.port}")
    async with Store.open(cfg, state_dir, {}) as store, health_running(store):
        assert store.available
        server.stop()
        async with asyncio.timeout(WAIT_S):
            await store.wait_unavailable()
        assert not (await store.status()).available
        server.start()
        async with asyncio.timeout(WAIT_S):
            await store.wait_available()
        assert await roundtrip(store) == b"v"
