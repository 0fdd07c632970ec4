"""deploy/redis/redis.conf on a real redis-server (AOF everysec, noeviction, protected
mode, loopback, a password from the environment via write-auth.sh, never argv), and a
guide-style redis.conf (CONFIG renamed, allkeys-lru) that cfn must not misreport."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cfn_client.api import Client
from tests.daemon_proc import CfndProcess
from tests.redis_servers import REDIS_SERVER, RedisFactory, free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "deploy" / "redis" / "redis.conf"
WRITE_AUTH = ROOT / "deploy" / "redis" / "write-auth.sh"
PASSWORD = "conf-test-pw-7"


@pytest.fixture
def shipped_redis(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    auth = tmp_path / "cfn-auth.conf"
    env = {"PATH": os.environ["PATH"], "REDIS_PASSWORD": PASSWORD}
    subprocess.run([str(WRITE_AUTH), str(auth)], env=env, check=True, timeout=10)
    assert oct(auth.stat().st_mode & 0o777) == oct(0o600)
    shipped = tmp_path / "redis.conf"
    shipped.write_text(CONF.read_text().replace("/etc/redis/cfn-auth.conf", str(auth)))
    port = free_port()
    # The shipped file as is, then only what a test must change: port, dir, log.
    (tmp_path / "test.conf").write_text(
        f"include {shipped}\nport {port}\ndir {tmp_path}\nlogfile {tmp_path / 'redis.log'}\n"
    )
    proc = subprocess.Popen(
        [REDIS_SERVER, str(tmp_path / "test.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        client = redis.Redis(port=port, password=PASSWORD, socket_timeout=2)
        try:
            wait_until(lambda: proc.poll() is not None or _pings(client), 15, "redis-server")
        finally:
            client.close()
        assert proc.poll() is None, (tmp_path / "redis.log").read_text()
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.BusyLoadingError):
        return False


def test_shipped_redis_conf_is_hardened(
    shipped_redis: tuple[int, subprocess.Popen[bytes]],
    cfnd_factory: Callable[..., CfndProcess],
) -> None:
    port, proc = shipped_redis
    assert PASSWORD.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, socket_timeout=2).ping()
    client = redis.Redis(port=port, password=PASSWORD, socket_timeout=2)
    try:
        got = {k: client.config_get(k)[k] for k in (
            "appendonly", "appendfsync", "maxmemory-policy", "protected-mode", "bind", "save",
        )}  # fmt: skip
    finally:
        client.close()
    assert got == {
        "appendonly": "yes",
        "appendfsync": "everysec",
        "maxmemory-policy": "noeviction",
        "protected-mode": "yes",
        "bind": "127.0.0.1 -::1",
        "save": "3600 1 300 100 60 10000",
    }
    cfnd = cfnd_factory(
        "--redis-url", f"redis://127.0.0.1:{port}/0", env={"CFN_REDIS_PASSWORD": PASSWORD}
    )
    with Client(cfnd.socket, timeout_s=30) as cfn:
        store = cfn.status().store
        assert (store.available, store.aof_enabled, store.unchecked) == (True, True, [])
        checks = {c.name: c for c in cfn.doctor().checks}
    assert checks["redis.persistence"].ok and checks["redis.eviction"].ok
    assert PASSWORD not in cfnd.log()
    assert cfnd.stop() == 0


def test_guide_style_conf_is_reported_truthfully(
    redis_factory: RedisFactory, cfnd_factory: Callable[..., CfndProcess]
) -> None:
    server = redis_factory(
        tcp=True,
        extra_conf=[
            'rename-command CONFIG ""',
            "maxmemory 100mb",
            "maxmemory-policy allkeys-lru",
            "save 900 1",
        ],
    )
    cfnd = cfnd_factory("--redis-url", server.url)
    with Client(cfnd.socket, timeout_s=30) as cfn:
        store = cfn.status().store
        checks = {c.name: c for c in cfn.doctor().checks}
    assert store.available
    assert store.aof_enabled is False  # INFO persistence still tells
    assert store.rdb_saves is None  # unknown, not "off"
    assert store.unchecked == [
        "rdb saves: CONFIG GET refused or renamed (INFO does not show the schedule)"
    ]
    persistence = checks["redis.persistence"]
    assert "save=off" not in persistence.detail
    assert "save=unknown (CONFIG GET refused or renamed)" in persistence.detail
    eviction = checks["redis.eviction"]
    assert not eviction.ok and not eviction.warning
    assert "policy=allkeys-lru" in eviction.detail and "noeviction" in eviction.fix
    assert cfnd.stop() == 0
