"""TLS end to end: cfnd on a real ``rediss://`` redis-server (certificates made in the
test) hands its CA / client certificate to the local cfn-agent processes it spawns, so
tasks run; a wrong CA or password is a clear error (cfnd status, cfn-agent exit 78)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cfn_client.api import Client
from cfn_client.wire.errors import StoreUnavailable
from tests.daemon_proc import BIN, CfndProcess
from tests.redis_servers import RedisFactory, TlsFiles, make_tls_files
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

FAST = {
    "CFN_AGENTS__HEARTBEAT_INTERVAL_S": "0.25",
    "CFN_AGENTS__RESTART_BACKOFF_S": "0.1",
    "CFN_AGENTS__STOP_GRACE_S": "1",
    "CFN_REDIS__HEALTH_INTERVAL_S": "0.25",
    "CFN_REDIS__RETRY_MAX_S": "0.5",
}


def _tls_env(files: TlsFiles, *, client_cert: bool) -> dict[str, str]:
    env = {**FAST, "CFN_REDIS__TLS_CA_FILE": str(files.ca_cert)}
    if client_cert:
        env["CFN_REDIS__TLS_CERT_FILE"] = str(files.client_cert)
        env["CFN_REDIS__TLS_KEY_FILE"] = str(files.client_key)
    return env


@pytest.mark.parametrize("mutual", [False, True], ids=["server-tls", "mutual-tls"])
def test_local_agents_run_tasks_over_tls(
    cfnd_factory: Callable[..., CfndProcess],
    redis_factory: RedisFactory,
    tls_files: TlsFiles,
    mutual: bool,
) -> None:
    redis = redis_factory(tls=tls_files, tls_auth_clients=mutual)
    assert redis.url.startswith("rediss://")
    proc = cfnd_factory("--redis-url", redis.url, env=_tls_env(tls_files, client_cert=mutual))
    with Client(proc.socket, timeout_s=30) as cfn:
        cfn.swarm_init("mesh", 4, name="tls")
        cfn.agent_create("shell", count=2)
        wait_until(
            lambda: sum(a.status in ("idle", "busy") for a in cfn.agent_list().agents) == 2,
            60,
            "two agents registered over TLS",
        )
        done = cfn.task_wait([cfn.task_submit("echo over-tls").id], timeout_s=30).tasks[0]
        assert done.status == "succeeded"
    # The agents got the files by path (no secret in argv), absolute.
    agent_pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _is_agent_of(int(p), proc)]
    assert len(agent_pids) == 2
    argv = Path(f"/proc/{agent_pids[0]}/cmdline").read_bytes().split(b"\0")
    assert str(tls_files.ca_cert).encode() in argv
    assert (str(tls_files.client_cert).encode() in argv) is mutual
    assert proc.stop() == 0


def _is_agent_of(pid: int, proc: CfndProcess) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"cfn-agent" in cmd and str(proc.workdir).encode() in cmd


def test_wrong_ca_is_a_clear_error(
    cfnd_factory: Callable[..., CfndProcess],
    redis_factory: RedisFactory,
    tls_files: TlsFiles,
    tmp_path: Path,
) -> None:
    redis = redis_factory(tls=tls_files)
    other = make_tls_files(tmp_path / "other-ca")
    proc = cfnd_factory("--redis-url", redis.url, env=_tls_env(other, client_cert=False))
    with Client(proc.socket, timeout_s=30) as cfn:
        store = cfn.status().store
        assert not store.available
        assert store.error is not None
        assert "TLS certificate verification of the Redis server failed" in store.error
        assert "redis.tls_ca_file" in store.error
        with pytest.raises(StoreUnavailable) as err:
            cfn.swarm_list()
        assert "TLS certificate verification" in err.value.message
    assert proc.stop() == 0

    # A remote cfn-agent with the wrong CA stops at once with exit 78 and says why.
    res = _agent(redis.url, "--tls-ca-file", str(other.ca_cert))
    assert res.returncode == 78, res.stderr
    assert "TLS certificate verification of the Redis server failed" in res.stderr
    assert "--tls-ca-file" in res.stderr
    assert "Traceback" not in res.stderr


def test_agent_wrong_password_and_missing_ca_file(
    redis_factory: RedisFactory, tls_files: TlsFiles
) -> None:
    redis = redis_factory(tcp=True, password="right-one")
    res = _agent(redis.url, env={"CFN_REDIS_PASSWORD": "wrong"})
    assert res.returncode == 78, res.stderr
    assert "Redis refused the credentials" in res.stderr
    assert "wrong" not in res.stderr.replace("wrong password", "")
    res = _agent("rediss://127.0.0.1:1", "--tls-ca-file", "/nonexistent/ca.crt")
    assert res.returncode == 78
    assert "redis.tls_ca_file /nonexistent/ca.crt does not exist or is not readable" in res.stderr


def _agent(
    url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CFN_")}
    full_env.update(env or {})
    return subprocess.run(
        [str(BIN / "cfn-agent"), "--redis", url, "--swarm", "s", "--type", "shell", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
