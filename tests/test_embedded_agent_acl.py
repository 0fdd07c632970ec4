"""Per-agent ACL users on the embedded Redis: each local agent logs in as a user of its
own, limited to its swarm's keys and channels, with its password only in its
environment; the user survives a restart of the server and goes with the agent."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import redis

from cfn_client.api import AsyncClient
from cfn_daemon.store.agent_users import hashed
from tests.conftest import DaemonFactory
from tests.test_deploy_acl import _assert_confined
from tests.test_loop_integration import FAST
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def _login(sock: Path, user: str, password: str) -> redis.Redis:
    return redis.Redis(
        unix_socket_path=str(sock), username=user, password=password, socket_timeout=5
    )


async def test_each_local_agent_has_its_own_confined_user_on_the_embedded_redis(
    daemon_factory: DaemonFactory, key_prefix: str
) -> None:
    d = await daemon_factory(redis_url=None, **FAST)
    server = d.store.embedded
    assert server is not None
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=4, name="main")
        await cfn.call("swarm.init", topology="mesh", max_agents=4, name="other")
        await cfn.call("agent.create", type="shell", count=1, swarm="main")
        task = await cfn.call("task.submit", text="echo acl", swarm="main")
        result = await cfn.call("task.wait", tasks=[task.id], timeout_s=60, swarm="main")
        assert result.tasks[0].status == "succeeded", result.tasks[0]
        (agent,) = (await cfn.call("agent.list", swarm="main")).agents
        assert agent.pid

        environ = Path(f"/proc/{agent.pid}/environ").read_bytes().split(b"\0")
        password = next(
            e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"CFN_REDIS_PASSWORD=")
        )
        assert password != server.password  # not the server's own password
        user = f"{key_prefix}-agent-{agent.id}"
        cmdline = Path(f"/proc/{agent.pid}/cmdline").read_bytes()
        assert f"unix://{user}@{server.socket_path}".encode() in cmdline
        assert password.encode() not in cmdline
        # Kept for the server's restarts as a hash, never in clear.
        kept = (server.dir / "agent-users.json").read_text()
        assert password not in kept and hashed(password) in kept
        assert oct((server.dir / "agent-users.json").stat().st_mode & 0o777) == oct(0o600)

        own = _login(server.socket_path, user, password)
        try:
            _assert_confined(own, key_prefix, "main")
        finally:
            own.close()

        # The server restarts (a crash here; a cfnd restart alike): the user is back.
        old = server.pid
        assert old is not None
        os.kill(old, 9)
        # (Waiting for the new pid, not for "unavailable": cfnd may notice and restart
        # the server before an outage wait could begin.)
        await asyncio.to_thread(
            wait_until,
            lambda: (
                server.pid not in (None, old) and _can_log_in(server.socket_path, user, password)
            ),
            60,
            "the restarted server to let the agent's user in",
        )
        await asyncio.wait_for(d.store.wait_available(), 60)
        again = _login(server.socket_path, user, password)
        try:
            assert again.exists(f"{key_prefix}:{{main}}:state") == 1
            with pytest.raises(redis.exceptions.NoPermissionError):
                again.flushall()
        finally:
            again.close()

        await cfn.call("agent.terminate", agent=agent.id, swarm="main")
        # The agent exited: its user is deleted, here and for the server's next start.
        await asyncio.to_thread(
            wait_until, lambda: not _can_log_in(server.socket_path, user, password), 30,
            "the agent's ACL user to be deleted",
        )  # fmt: skip
    assert user not in (server.dir / "agent-users.json").read_text()


def _can_log_in(sock: Path, user: str, password: str) -> bool:
    client = _login(sock, user, password)
    try:
        return bool(client.ping())
    except (redis.exceptions.AuthenticationError, redis.exceptions.ConnectionError):
        return False
    finally:
        client.close()
