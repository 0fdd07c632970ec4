"""Redis ACL: deploy/redis/users.acl is generated from the key names in keys.py, and a
real redis-server loaded with it runs cfn: cfnd as ``coordinator``, each local agent
with an ACL user of its own, a remote cfn-agent as ``agent-main``; an agent cannot read
another swarm's keys or run FLUSHALL / CONFIG, and a limited user gets a clear error."""

from __future__ import annotations

import inspect
import os
import subprocess
from collections.abc import Callable, Iterator
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import redis

from cfn_client.api import Client
from cfn_client.wire.errors import StoreDenied
from cfn_daemon.store.acl import agent_rules, main, users_acl
from cfn_daemon.store.keys import Keys
from tests.daemon_proc import BIN, CfndProcess
from tests.redis_servers import RedisFactory, RedisProcess
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
PASSWORDS = {"coordinator": "c-pw-1", "agent-main": "a-pw-2", "monitor": "m-pw-3"}
FAST = {
    "CFN_AGENTS__HEARTBEAT_INTERVAL_S": "0.25",
    "CFN_AGENTS__STOP_GRACE_S": "1",
    "CFN_REDIS__HEALTH_INTERVAL_S": "0.25",
}


def test_users_acl_file_is_the_generated_one() -> None:
    shipped = (ROOT / "deploy" / "redis" / "users.acl").read_text()
    assert shipped == users_acl(Keys("cfn")), "run: python -m cfn_daemon.store.acl"
    env = {"CFN_ACL_PASSWORD_COORDINATOR": "x", "CFN_ACL_PASSWORD_AGENT_MAIN": "y"}
    hashed = main(["--passwords-from-env"], env)
    assert "#2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881" in hashed
    assert ">x" not in hashed and "user monitor on resetpass resetkeys" in hashed


def test_agent_key_patterns_cover_every_swarm_key_and_no_other_swarm() -> None:
    keys = Keys("cfn")
    patterns = [r[1:] for r in agent_rules(keys, "main") if r.startswith("~")]
    channels = [r[1:] for r in agent_rules(keys, "main") if r.startswith("&")]
    per_swarm = []
    for name, fn in inspect.getmembers(Keys, inspect.isfunction):
        params = list(inspect.signature(fn).parameters)
        if name.startswith("_") or params[:2] != ["self", "swarm"]:
            continue
        args = ["x"] * (len(params) - 2)
        if name == "votes":
            args = ["r1", 1]  # type: ignore[list-item]
        out = getattr(keys, name)("main", *args)
        for key in out if isinstance(out, list) else [out]:
            per_swarm.append(key)
            assert any(fnmatchcase(key, p) for p in patterns), (name, key)
        other = getattr(keys, name)("other", *args)
        for key in other if isinstance(other, list) else [other]:
            assert not any(fnmatchcase(key, p) for p in patterns), (name, key)
    assert len(per_swarm) > 20
    assert fnmatchcase(keys.notify("main"), channels[0])
    assert not fnmatchcase(keys.notify("other"), channels[0])
    for global_key in (keys.swarms, keys.config):
        assert not any(fnmatchcase(global_key, p) for p in patterns)


@pytest.fixture
def acl_redis(redis_factory: RedisFactory, tmp_path: Path, key_prefix: str) -> RedisProcess:
    acl = tmp_path / "users.acl"
    fd = os.open(acl, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(users_acl(Keys(key_prefix), "main", PASSWORDS))
    return redis_factory(tcp=True, extra_conf=[f"aclfile {acl}"])


def _client(server: RedisProcess, user: str, password: str) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=server.port, username=user, password=password, socket_timeout=5
    )


def _assert_confined(c: redis.Redis, prefix: str, own: str) -> None:
    """An agent's user: its swarm's keys, read-only agent types, nothing else."""
    assert c.exists(f"{prefix}:{{{own}}}:state") == 1
    c.hgetall(f"{prefix}:agent_types")
    denied = [
        lambda: c.get(f"{prefix}:{{other}}:state"),
        lambda: c.hgetall(f"{prefix}:{{other}}:tokens"),
        lambda: c.hset(f"{prefix}:agent_types", "x", "y"),
        lambda: c.smembers(f"{prefix}:swarms"),
        lambda: c.flushall(),
        lambda: c.config_get("save"),
        lambda: c.config_set("appendonly", "no"),
        lambda: c.execute_command("ACL", "SETUSER", "evil", "on", "nopass", "+@all", "~*"),
        lambda: c.keys("*"),
        lambda: c.publish(f"{prefix}:{{other}}:notify", "ev"),
    ]
    for call in denied:
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()


@pytest.fixture
def remote_agents() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        proc.terminate()
        proc.communicate(timeout=30)


def test_cfn_runs_with_least_privilege_users(
    cfnd_factory: Callable[..., CfndProcess],
    acl_redis: RedisProcess,
    key_prefix: str,
    remote_agents: list[subprocess.Popen[str]],
) -> None:
    env = {**FAST, "CFN_REDIS__USERNAME": "coordinator", "CFN_REDIS_PASSWORD": "c-pw-1"}
    proc = cfnd_factory("--redis-url", acl_redis.url, env=env)
    with Client(proc.socket, timeout_s=30) as cfn:
        assert cfn.status().store.available
        cfn.swarm_init("mesh", 4, name="main")
        cfn.swarm_init("mesh", 4, name="other")
        cfn.agent_create("shell", count=1, swarm="main")
        done = cfn.task_wait(
            [cfn.task_submit("echo acl", swarm="main").id], timeout_s=30, swarm="main"
        )
        assert done.tasks[0].status == "succeeded"
        (local,) = [a for a in cfn.agent_list(swarm="main").agents if a.status == "idle"]
        assert local.pid
        # The local agent logs in as a user of its own, confined to swarm main.
        environ = Path(f"/proc/{local.pid}/environ").read_bytes().split(b"\0")
        password = next(e for e in environ if e.startswith(b"CFN_REDIS_PASSWORD=")).split(b"=", 1)
        assert password[1].decode() != "c-pw-1"
        user = f"{key_prefix}-agent-{local.id}"
        cmdline = Path(f"/proc/{local.pid}/cmdline").read_bytes()
        assert f"redis://{user}@127.0.0.1".encode() in cmdline
        own = _client(acl_redis, user, password[1].decode())
        try:
            _assert_confined(own, key_prefix, "main")
        finally:
            own.close()

        # A remote agent with the file's agent-main user joins and works.
        agent_env = {k: v for k, v in os.environ.items() if not k.startswith("CFN_")}
        agent_env["CFN_REDIS_PASSWORD"] = "a-pw-2"
        remote_agents.append(
            subprocess.Popen(
                [
                    str(BIN / "cfn-agent"),
                    "--redis",
                    acl_redis.url.replace("//", "//agent-main@"),
                    "--swarm",
                    "main",
                    "--type",
                    "shell",
                    "--id",
                    "remote-1",
                    "--key-prefix",
                    key_prefix,
                    "--heartbeat-s",
                    "0.25",
                ],
                env=agent_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        wait_until(
            lambda: any(
                a.id == "remote-1" and a.status == "idle"
                for a in cfn.agent_list(swarm="main").agents
            ),
            30,
            "the remote agent to register as agent-main",
        )
        ids = [cfn.task_submit(f"echo {i}", swarm="main").id for i in range(4)]
        assert {t.status for t in cfn.task_wait(ids, timeout_s=30, swarm="main").tasks} == {
            "succeeded"
        }
    agent_main = _client(acl_redis, "agent-main", "a-pw-2")
    monitor = _client(acl_redis, "monitor", "m-pw-3")
    try:
        _assert_confined(agent_main, key_prefix, "main")
        assert "redis_version" in monitor.info("server")
        assert monitor.exists(f"{key_prefix}:{{main}}:state") == 1
        for call in (lambda: monitor.set(f"{key_prefix}:x", "1"), lambda: monitor.flushall()):
            with pytest.raises(redis.exceptions.NoPermissionError):
                call()
        with pytest.raises(redis.exceptions.AuthenticationError):
            _client(acl_redis, "default", "").ping()
    finally:
        agent_main.close()
        monitor.close()
    assert proc.stop() == 0
    # The local agent's own user went with the agent: it cannot log in any more.
    gone = _client(acl_redis, user, password[1].decode())
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            gone.ping()
    finally:
        gone.close()


def test_a_limited_user_gets_a_clear_error(
    cfnd_factory: Callable[..., CfndProcess], acl_redis: RedisProcess
) -> None:
    env = {**FAST, "CFN_REDIS__USERNAME": "monitor", "CFN_REDIS_PASSWORD": "m-pw-3"}
    proc = cfnd_factory("--redis-url", acl_redis.url, env=env)
    with Client(proc.socket, timeout_s=30) as cfn:
        assert cfn.status().store.available
        with pytest.raises(StoreDenied) as err:
            cfn.swarm_init("mesh", 4, name="main")
    assert err.value.instance_code == "store_denied"
    assert "ACL user 'monitor' may not run the 'hset' command" in err.value.message
    assert "deploy/redis/users.acl" in err.value.message
    assert "internal_error" not in proc.log()
    assert proc.stop() == 0


def test_wrong_password_is_a_clear_error(
    cfnd_factory: Callable[..., CfndProcess], acl_redis: RedisProcess
) -> None:
    env = {**FAST, "CFN_REDIS__USERNAME": "coordinator", "CFN_REDIS_PASSWORD": "nope"}
    proc = cfnd_factory("--redis-url", acl_redis.url, env=env)
    with Client(proc.socket, timeout_s=30) as cfn:
        store = cfn.status().store
    assert not store.available and store.error
    assert "Redis refused the credentials (wrong password or ACL user)" in store.error
    assert "nope" not in proc.log()
    assert proc.stop() == 0


def test_embedded_redis_has_a_password_never_in_argv(
    cfnd_factory: Callable[..., CfndProcess],
) -> None:
    proc = cfnd_factory(env=FAST)  # no Redis URL: the embedded server
    with Client(proc.socket, timeout_s=30) as cfn:
        store = cfn.status().store
        assert store.mode == "embedded" and store.embedded_pid
        cfn.swarm_init("mesh", 4, name="emb")
        cfn.agent_create("shell", count=1)
        done = cfn.task_wait([cfn.task_submit("echo embedded").id], timeout_s=30)
        assert done.tasks[0].status == "succeeded"
    redis_dir = proc.state_dir / "redis"
    secret = (redis_dir / "password").read_text().strip()
    assert len(secret) >= 32
    for name in ("password", "redis.conf"):
        assert oct((redis_dir / name).stat().st_mode & 0o777) == oct(0o600), name
    assert secret.encode() not in Path(f"/proc/{store.embedded_pid}/cmdline").read_bytes()
    assert secret not in proc.log()
    sock = str(redis_dir / "redis.sock")
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(unix_socket_path=sock, socket_timeout=2).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(unix_socket_path=sock, password="guess", socket_timeout=2).ping()
    client = redis.Redis(unix_socket_path=sock, password=secret, socket_timeout=2)
    try:
        assert client.ping()
    finally:
        client.close()
    assert proc.stop() == 0


def test_without_acl_setuser_agents_fall_back_to_cfnds_user(
    redis_factory: RedisFactory,
    tmp_path: Path,
    key_prefix: str,
    cfnd_factory: Callable[..., CfndProcess],
) -> None:
    text = users_acl(Keys(key_prefix), "main", PASSWORDS)
    text = text.replace(" +acl|setuser +acl|deluser", "")
    assert "acl|setuser" not in text
    acl = tmp_path / "limited.acl"
    acl.write_text(text)
    server = redis_factory(tcp=True, extra_conf=[f"aclfile {acl}"])
    env = {**FAST, "CFN_REDIS__USERNAME": "coordinator", "CFN_REDIS_PASSWORD": "c-pw-1"}
    proc = cfnd_factory("--redis-url", server.url, env=env)
    with Client(proc.socket, timeout_s=30) as cfn:
        cfn.swarm_init("mesh", 4, name="main")
        cfn.agent_create("shell", count=1)
        done = cfn.task_wait([cfn.task_submit("echo fallback").id], timeout_s=30)
        assert done.tasks[0].status == "succeeded"
    events = [e for e in proc.log_events() if e.get("event") == "agent_acl_user_unavailable"]
    assert events and "acl|setuser" in str(events[0]["error"])
    assert proc.stop() == 0
