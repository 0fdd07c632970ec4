"""A task that tries to rewrite another agent's key fails (issue 10's acceptance).

Real cfnd (as root, so tasks run as ``nobody``: ``[agents] run_as``) with its embedded
Redis, real cfn-agents. While a CFN run's implementer works, a ``shell`` task tries
everything it can to replace the run's validator's public key: connect to Redis (no
credentials in its environment; the password file and the socket are cfnd's alone),
read its agent's environment, HSET the key with any password it found, overwrite the
pinned key file in cfnd's state dir. All of it fails, and the validator's vote that
follows still verifies and counts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cfn_client.api import AsyncClient
from cfn_daemon.util.signing import Signer
from tests.cli_support import SHARED_ENV
from tests.daemon_proc import CfndProcess
from tests.test_loop_integration import EXAMPLES
from tests.test_swarm_integration import next_event
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="tasks run as another uid only under root"),
]


# Tasks run as nobody, who cannot reach this venv's interpreter (under /root here): the
# example agents need only the standard library.
PYTHON = "/usr/bin/python3"


@pytest.fixture
def workdir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="cfnkeys-", dir="/tmp"))
    yield base
    if not os.environ.get("CFN_KEEP_TEST_TMP"):  # keep agent logs when debugging
        shutil.rmtree(base, ignore_errors=True)


def attack(state_dir: Path, swarm: str, victim: str, forged: str) -> str:
    """The task: one ``name=outcome`` line per attempt."""
    sock, password = state_dir / "redis" / "redis.sock", state_dir / "redis" / "password"
    key_file = state_dir / "agent-keys" / swarm / victim
    tokens = f"*:{{{swarm}}}:tokens"
    probe = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(sock)!r}); print('sock=connected')\n"
        "except OSError as e:\n"
        "    print('sock=denied', type(e).__name__)\n"
    )
    return "\n".join(
        [
            "echo uid=$(id -u)",
            "echo redis_env=$(env | grep -c -e ^CFN_REDIS -e ^REDISCLI_AUTH)",
            f"cat {password} >/dev/null 2>&1 && echo pwfile=readable || echo pwfile=denied",
            "cat /proc/$PPID/environ >/dev/null 2>&1 && echo environ=readable"
            " || echo environ=denied",
            f'/usr/bin/python3 -c "{probe}"',
            # Any password it could find (none), and the key written with it.
            f"PW=$(cat {password} 2>/dev/null; tr '\\0' '\\n' < /proc/$PPID/environ 2>/dev/null"
            " | sed -n 's/^CFN_REDIS_PASSWORD=//p')",
            f"for k in $(REDISCLI_AUTH=\"$PW\" redis-cli -s {sock} --scan --pattern '{tokens}'"
            " 2>/dev/null); do"
            f' REDISCLI_AUTH="$PW" redis-cli -s {sock} HSET "$k" {victim} {forged}; done',
            f'REDISCLI_AUTH="$PW" redis-cli -s {sock} PING >/dev/null 2>&1'
            " && echo hset=possible || echo hset=denied",
            f"echo {forged} 2>/dev/null > {key_file} && echo keyfile=written"
            " || echo keyfile=denied",
            f"ls {state_dir / 'agent-keys'} >/dev/null 2>&1 && echo keydir=listable"
            " || echo keydir=denied",
        ]
    )


async def test_a_task_cannot_rewrite_another_agents_key(workdir: Path) -> None:
    workdir.chmod(0o711)  # the implementer runs as nobody too: it must see the gate
    gate = workdir / "go"
    # The implementer works until the test creates ``gate`` (bounded: 60 s at most).
    wait = f"i=0; while [ ! -e {gate} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"
    config = (
        '[agents]\nrun_as = "nobody"\n\n'
        '[agent_types.impl]\nkind = "command"\nrole = "implementer"\n'
        f'exec = ["sh", "-c", "{wait}; exec {PYTHON} {EXAMPLES / "implementer.py"}"]\n'
        '[agent_types.check]\nkind = "command"\nrole = "validator"\n'
        f'exec = ["{PYTHON}", "{EXAMPLES / "validator.py"}"]\n'
    )
    (workdir / "cfnd.toml").write_text(config)
    env = {**SHARED_ENV, "CFN_KEY_PREFIX": f"cfntest-{uuid.uuid4().hex[:12]}"}
    proc = CfndProcess(workdir / "d", ["--config", str(workdir / "cfnd.toml")], env).start()
    try:
        async with AsyncClient(proc.socket, timeout_s=60) as cfn:
            assert (await cfn.call("status")).store.mode == "embedded"
            await cfn.call("swarm.init", topology="mesh", max_agents=6, name="keys")
            await cfn.call("agent.create", type="shell", count=1, swarm="keys")
            info = await cfn.call(
                "loop.start", task="ship it", implementers=["impl"], validators=["check"],
                max_loop2=1, max_loop3=1, swarm="keys",
            )  # fmt: skip
            (victim,) = info.validators
            pinned = proc.state_dir / "agent-keys" / "keys" / victim

            def key_pinned() -> str | None:
                text = pinned.read_text().strip() if pinned.exists() else ""
                return text if text.startswith("ed25519:") else None

            real = await asyncio.to_thread(wait_until, key_pinned, 60, "the validator's key")
            script = attack(proc.state_dir, "keys", victim, Signer().public)
            task = await cfn.call("task.submit", text=script, swarm="keys", type="shell")
            done = await cfn.call("task.wait", tasks=[task.id], timeout_s=60, swarm="keys")
            out = done.tasks[0].result.output
            lines = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            assert lines["uid"] == str(65534), out
            assert lines["redis_env"] == "0", out  # (a) no credentials in its environment
            assert lines["pwfile"] == "denied", out
            assert lines["environ"] == "denied", out
            assert lines["sock"].startswith("denied"), out
            assert lines["hset"] == "denied", out  # (b) no way into Redis
            assert lines["keyfile"] == "denied", out  # (c) the pinned key stays
            assert lines["keydir"] == "denied", out
            assert pinned.read_text().strip() == real
            assert (pinned.stat().st_mode & 0o777) == 0o600
            async with cfn.events_follow(types=["loop.vote", "security"], swarm="keys") as ev:
                gate.touch()  # the run goes on
                vote = await asyncio.wait_for(next_event(ev, "loop.vote", validator=victim), 20)
            assert vote.data["verified"] is True, vote.data
            async with cfn.stream("loop.follow", {"run": info.id, "swarm": "keys"}) as follow:
                async for _ in follow:
                    pass
            final = await cfn.call("loop.status", run=info.id, swarm="keys")
            security = (await cfn.call("events.list", types=["security"], swarm="keys")).events
        assert final.rounds and final.rounds[0]["accepted"] == [victim], final.rounds
        assert not security, security
    finally:
        assert proc.stop() == 0, proc.log()[-4000:]
        proc.close()
