"""The real cfnd executable: embedded Redis, external Redis, signals, bad config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import SHARED_REDIS
from tests.daemon_proc import CFND, CfndProcess, cfnctl
from tests.redis_servers import RedisProcess, pid_alive
from tests.redis_servers import wait_pid_gone as wait_gone

CfndFactory = Callable[..., CfndProcess]


def status_json(proc: CfndProcess) -> tuple[int, dict[str, object]]:
    res = cfnctl(proc.socket, "--json", "status")
    return res.returncode, json.loads(res.stdout)


def test_embedded_default_and_clean_sigterm(cfnd_factory: CfndFactory) -> None:
    proc = cfnd_factory()  # no Redis configured: embedded
    res = cfnctl(proc.socket, "status")
    assert res.returncode == 0, res.stderr
    assert "embedded" in res.stdout
    _rc, status = status_json(proc)
    store = status["store"]
    assert isinstance(store, dict)
    assert store["mode"] == "embedded"
    assert store["available"] is True
    assert store["aof_enabled"] is True
    redis_pid = store["embedded_pid"]
    assert isinstance(redis_pid, int)
    assert pid_alive(redis_pid)
    assert oct(os.stat(proc.socket).st_mode & 0o777) == oct(0o660)

    started = time.monotonic()
    assert proc.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10.0  # well inside shutdown_grace_s
    assert not proc.socket.exists()
    assert wait_gone(redis_pid)
    proc.wait_for("STOPPING=1")
    events = [e["event"] for e in proc.log_events()]
    assert "cfnd_stopping" in events
    assert "embedded_redis_stopped" in events


def test_sigint_also_stops_cleanly(cfnd: CfndProcess) -> None:
    assert cfnd.stop(signal.SIGINT) == 0
    assert not cfnd.socket.exists()


def test_external_redis_tcp(cfnd: CfndProcess) -> None:
    rc, status = status_json(cfnd)
    assert rc == 0
    store = status["store"]
    assert isinstance(store, dict)
    assert store["mode"] == "external"
    assert store["url"] == SHARED_REDIS
    assert cfnd.stop() == 0


def test_external_redis_unix_socket(
    cfnd_factory: CfndFactory, redis_factory: Callable[..., RedisProcess]
) -> None:
    server = redis_factory()
    proc = cfnd_factory("--redis-url", server.url)
    rc, status = status_json(proc)
    assert rc == 0
    store = status["store"]
    assert isinstance(store, dict)
    assert store["mode"] == "external"
    assert store["url"].startswith("unix://")  # type: ignore[union-attr]
    assert proc.stop() == 0


def test_redis_outage_reported_then_recovered_without_restart(
    cfnd_factory: CfndFactory, redis_factory: Callable[..., RedisProcess]
) -> None:
    server = redis_factory()
    proc = cfnd_factory("--redis-url", server.url)
    assert cfnctl(proc.socket, "status").returncode == 0

    server.stop()
    proc.wait_for(f"STATUS=serving on {proc.socket}; Redis UNAVAILABLE")
    res = cfnctl(proc.socket, "status")
    assert res.returncode == 1
    assert "unavailable" in (res.stdout + res.stderr).lower()
    rc, status = status_json(proc)
    assert rc == 1
    assert status["store"]["available"] is False  # type: ignore[index]
    # Ops that need Redis fail with a specific, retryable error; the daemon stays up.
    res = cfnctl(proc.socket, "config", "set", "loop.max_loop2", "4")
    assert res.returncode == 7  # EXIT_STORE_UNAVAILABLE
    assert "store_unavailable" in res.stderr

    proc.notifications.clear()
    server.start()
    proc.wait_for(f"STATUS=serving on {proc.socket}; Redis available")
    assert cfnctl(proc.socket, "status").returncode == 0
    assert cfnctl(proc.socket, "config", "set", "loop.max_loop2", "4").returncode == 0
    assert proc.stop() == 0


def test_bad_config_file_exits_nonzero_naming_file_key_value(tmp_path: Path) -> None:
    bad = tmp_path / "cfnd.toml"
    bad.write_text("[loop]\nconsensus_threshold = 1.7\n")
    res = subprocess.run(
        [*CFND, "--config", str(bad), "--socket", str(tmp_path / "s.sock")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("CFN_")},
    )
    assert res.returncode == 78
    assert str(bad) in res.stderr
    assert "loop.consensus_threshold" in res.stderr
    assert "1.7" in res.stderr
    assert not (tmp_path / "s.sock").exists()


def test_password_on_command_line_is_refused(tmp_path: Path) -> None:
    res = subprocess.run(
        [*CFND, "--redis-url", "redis://:hunter2@127.0.0.1:6379/0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 2
    assert "must not contain a password" in res.stderr
    assert "CFN_REDIS_PASSWORD" in res.stderr


def test_sigkill_then_restart_recovers_state(cfnd_factory: CfndFactory) -> None:
    proc = cfnd_factory(name="crashy")
    assert cfnctl(proc.socket, "config", "set", "loop.max_loop3", "7").returncode == 0
    _, status = status_json(proc)
    redis_pid = status["store"]["embedded_pid"]  # type: ignore[index]
    assert isinstance(redis_pid, int)

    proc.stop(signal.SIGKILL)
    # The private redis-server follows its parent (PR_SET_PDEATHSIG) ...
    assert wait_gone(redis_pid)
    assert proc.socket.exists()  # a stale socket file is left behind

    # ... and a new cfnd on the same state dir replaces the stale socket and finds the data.
    again = CfndProcess(proc.workdir.parent / "crashy-2", [], dict(proc.env))
    again.socket, again.state_dir = proc.socket, proc.state_dir
    again.start()
    try:
        res = cfnctl(again.socket, "--json", "config", "show", "loop.max_loop3")
        assert res.returncode == 0, res.stderr
        entry = json.loads(res.stdout)["entries"][0]
        assert entry == {"key": "loop.max_loop3", "value": 7, "source": "runtime"}
        assert again.stop() == 0
    finally:
        again.close()


def test_sighup_reloads_config_file(cfnd_factory: CfndFactory, tmp_path: Path) -> None:
    conf = tmp_path / "cfnd.toml"
    conf.write_text("[loop]\nmax_loop2 = 3\n")
    proc = cfnd_factory("--config", str(conf), "--redis-url", SHARED_REDIS)
    res = cfnctl(proc.socket, "--json", "config", "show", "loop.max_loop2")
    assert json.loads(res.stdout)["entries"][0]["value"] == 3
    conf.write_text("[loop]\nmax_loop2 = 6\n")
    proc.send_signal(signal.SIGHUP)
    proc.wait_for("STATUS=config reloaded")
    res = cfnctl(proc.socket, "--json", "config", "show", "loop.max_loop2")
    assert json.loads(res.stdout)["entries"][0]["value"] == 6
    # A broken file is refused and the running config stays.
    conf.write_text("[loop]\nmax_loop2 = 0\n")
    proc.notifications.clear()
    proc.send_signal(signal.SIGHUP)
    proc.wait_for("STATUS=config reload failed: ")
    res = cfnctl(proc.socket, "--json", "config", "show", "loop.max_loop2")
    assert json.loads(res.stdout)["entries"][0]["value"] == 6
    assert proc.stop() == 0


def test_systemd_watchdog_pings(cfnd_factory: CfndFactory) -> None:
    proc = cfnd_factory("--redis-url", SHARED_REDIS, env={"WATCHDOG_USEC": "200000"})
    proc.wait_for("WATCHDOG=1", timeout_s=10)
    assert proc.stop() == 0
