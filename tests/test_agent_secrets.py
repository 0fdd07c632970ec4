"""Agent-type secrets are never published in clear: a planted secret, resolved by the
cfn-agent from a file and from its environment, reaches the task and nowhere else
(argv of every process, cfnd's and the agents' logs, `config show`, events, Redis)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
import redis

from cfn_daemon.settings.schema import AgentTypeConfig
from tests.cli_support import SHARED_REDIS_DEFAULT, start_cfnd
from tests.daemon_proc import CFNCTL


def test_a_secret_looking_env_value_is_refused() -> None:
    with pytest.raises(ValueError, match="looks like a secret"):
        AgentTypeConfig(env={"ANTHROPIC_API_KEY": "sk-123"})
    with pytest.raises(ValueError, match="env:VAR"):
        AgentTypeConfig(secrets={"ANTHROPIC_API_KEY": "sk-123"})
    AgentTypeConfig(secrets={"ANTHROPIC_API_KEY": "env:ANTHROPIC_API_KEY"})


def test_planted_secret_appears_nowhere_but_in_the_task() -> None:
    from_file, from_env = f"s3cr3t-{uuid.uuid4().hex}", f"s3cr3t-{uuid.uuid4().hex}"
    base = Path(tempfile.mkdtemp(prefix="cfnsecret-", dir="/tmp"))
    secret_file = base / "token.txt"
    secret_file.write_text(from_file + "\n")
    secret_file.chmod(0o600)
    config = (
        '[agent_types.secretive]\nkind = "shell"\n'
        f'secrets = {{ PLANTED_FILE_TOKEN = "file:{secret_file}", '
        'PLANTED_ENV_TOKEN = "env:PLANTED_SOURCE" }\n'
    )
    redis_url = os.environ.get("CFN_TEST_REDIS_URL", SHARED_REDIS_DEFAULT)
    d = start_cfnd(base, redis_url, config=config, env={"PLANTED_SOURCE": from_env})
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp", "CFN_SOCKET": str(d.socket)}

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CFNCTL, *args], env=env, capture_output=True, text=True, timeout=40, check=False
        )

    try:
        assert ctl("swarm", "init", "mesh", "4", "--name", "secrets").returncode == 0
        script = (
            'printf %s "$PLANTED_FILE_TOKEN" | sha256sum; '
            'printf %s "$PLANTED_ENV_TOKEN" | sha256sum'
        )
        out = ctl("--swarm", "secrets", "run", "--type", "secretive", "--wait", script)
        assert out.returncode == 0, out
        digests = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
        assert digests == [hashlib.sha256(s.encode()).hexdigest() for s in (from_file, from_env)]
        places: dict[str, str] = {}
        # Every process's argv (cfnd, its agents, redis, this test's children).
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                places[f"argv {pid}"] = (
                    Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                )
            except OSError:
                continue
        places["cfnd log"] = d.log()
        for log in (d.state_dir / "agents").glob("*.log"):
            places[f"agent log {log.name}"] = log.read_text(errors="replace")
        places["config show"] = ctl("--json", "config", "show").stdout
        places["events"] = ctl("--swarm", "secrets", "--json", "events").stdout
        r = redis.Redis.from_url(redis_url)
        prefix = d.env["CFN_KEY_PREFIX"]
        places["cfn:agent_types"] = str(r.hgetall(f"{prefix}:agent_types"))
        r.close()
        assert "PLANTED_FILE_TOKEN" in places["cfn:agent_types"]  # the reference is there
        for where, text in places.items():
            assert from_file not in text and from_env not in text, where
        assert ctl("--swarm", "secrets", "swarm", "destroy", "--force").returncode == 0
    finally:
        try:
            assert d.stop() == 0, d.log()[-4000:]
        finally:
            d.close()
            shutil.rmtree(base, ignore_errors=True)
