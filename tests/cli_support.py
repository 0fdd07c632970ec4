"""cfnctl as a user types it, against one real cfnd shared by the CLI test modules.

``shared_cfnd`` is a session-scoped real ``cfnd`` process on the shared Redis with a
private key prefix. Tests keep out of each other's way by each making their own
uniquely named swarm (the ``swarm`` fixture), destroyed at teardown. Commands run
in-process through click's CliRunner (fast), talking to cfnd over its socket.

Agent types: the built-in ``shell`` runs the task text in ``sh``; ``impl``,
``impl-gate`` (fails the Loop 3 gate once), ``check`` (approves), ``check-r2``
(approves from round 2), ``check-never`` (always rejects) and ``po`` (owner,
DEFER with two backlog items) run the example agents of examples/agents.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cfn_client.api import Client
from cfn_client.cli.main import cfnctl
from cfn_client.wire.schema.swarm import AgentInfo, Event
from tests.daemon_proc import CFNCTL, CfndProcess

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "agents"
SHARED_REDIS_DEFAULT = "redis://127.0.0.1:6379/0"
# Fast beats, a generous lapse: nothing here tests lapse detection, and a loaded
# 2-core machine must not get a healthy agent killed as hung.
SHARED_ENV = {
    "CFN_AGENTS__HEARTBEAT_INTERVAL_S": "0.5",
    "CFN_AGENTS__LAPSE_S": "20",
    "CFN_AGENTS__STOP_GRACE_S": "2",
    "CFN_AGENTS__RESTART_BACKOFF_S": "0.05",
    "CFN_TASKS__RETRY_BASE_S": "0.05",
    # Every test makes a swarm of its own (and destroys it): room for many at once.
    "CFN_LIMITS__MAX_SWARMS": "1000",
}


def _agent_type(name: str, script: str, role: str, env: Mapping[str, str]) -> str:
    env_toml = ", ".join(f'{k} = "{v}"' for k, v in env.items())
    return (
        f'[agent_types.{name}]\nkind = "command"\n'
        f'exec = ["{sys.executable}", "{EXAMPLES / script}"]\n'
        f'role = "{role}"\nenv = {{ {env_toml} }}\n\n'
    )


AGENT_TYPES = (
    _agent_type("impl", "implementer.py", "implementer", {"EXAMPLE_CONFIDENCE": "0.9"})
    + _agent_type("impl-gate", "implementer.py", "implementer", {"EXAMPLE_CONFIDENCE": "0.5,0.9"})
    + _agent_type("check", "validator.py", "validator", {})
    + _agent_type("check-r2", "validator.py", "validator", {"EXAMPLE_APPROVE_FROM_ROUND": "2"})
    + _agent_type(
        "check-never",
        "validator.py",
        "validator",
        {"EXAMPLE_APPROVE_FROM_ROUND": "0", "EXAMPLE_ISSUE": "empty input crashes"},
    )
    + _agent_type(
        "po", "owner.py", "owner", {"EXAMPLE_DECISION": "DEFER", "EXAMPLE_BACKLOG": "docs;tests"}
    )
)


# The CLI tests' tasks are mostly shell one-liners: `run "echo hi"` without --type runs
# them here (cfnd's own default is an LLM type, tests/test_cli_spellings.py).
SHELL_BY_DEFAULT = '[swarm]\ndefault_type = "shell"\n\n'


def start_cfnd(
    workdir: Path,
    redis_url: str,
    *,
    config: str = SHELL_BY_DEFAULT + AGENT_TYPES,
    env: Mapping[str, str] = SHARED_ENV,
) -> CfndProcess:
    """A real cfnd in ``workdir`` with its own key prefix and the agent types above."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "cfnd.toml"
    conf.write_text(config)
    prefix = f"cfntest-{uuid.uuid4().hex[:12]}"
    proc = CfndProcess(
        workdir / "d",
        ["--config", str(conf), "--redis-url", redis_url],
        {"CFN_KEY_PREFIX": prefix, **env},
    )
    return proc.start()


@contextlib.contextmanager
def own_cfnd(prefix: str, **start: Any) -> Iterator[CfndProcess]:
    """A private real cfnd on the shared Redis in a fresh temp dir (``start_cfnd``'s
    keyword arguments); at the end it must stop cleanly, and its dir is removed."""
    import os

    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    proc = start_cfnd(base, os.environ.get("CFN_TEST_REDIS_URL", SHARED_REDIS_DEFAULT), **start)
    try:
        yield proc
    finally:
        try:
            assert proc.stop() == 0, proc.log()[-4000:]
        finally:
            proc.close()
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_cfnd() -> Iterator[CfndProcess]:
    """One real cfnd for the whole session (its own key prefix, stopped at the end)."""
    import os

    base = Path(tempfile.mkdtemp(prefix="cfns-", dir="/tmp"))
    proc = start_cfnd(base, os.environ.get("CFN_TEST_REDIS_URL", SHARED_REDIS_DEFAULT))
    try:
        yield proc
    finally:
        try:
            for done in _DESTROYS:
                done.result(timeout=60)  # every test's swarm is gone before cfnd stops
            _DESTROYS.clear()
            assert proc.stop() == 0, proc.log()[-4000:]
        finally:
            proc.close()
            if not os.environ.get("CFN_KEEP_TEST_TMP"):
                shutil.rmtree(base, ignore_errors=True)


def run(
    socket: Path,
    *args: str,
    input: str | None = None,
    env: Mapping[str, str | None] | None = None,
) -> tuple[int, str, str]:
    """``cfnctl --socket SOCKET ARGS...`` in-process; (exit code, stdout, stderr)."""
    result = CliRunner().invoke(
        cfnctl,
        ["--socket", str(socket), *args],
        input=input,
        env={"CFN_SWARM": None, **(env or {})},
    )
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def header(out: str) -> list[str]:
    return out.splitlines()[0].split()


def field(out: str, label: str) -> str:
    """The value of the first ``label: value`` line (labels may be indented)."""
    for line in out.splitlines():
        if line.strip().startswith(label + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {label!r} line in:\n{out}")


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


@dataclass
class Swarm:
    """A swarm of its own on the shared cfnd; ``cli`` runs cfnctl with ``--swarm`` set."""

    socket: Path
    name: str

    def cli(self, *args: str, **kw: Any) -> tuple[int, str, str]:
        return run(self.socket, "--swarm", self.name, *args, **kw)

    def client(self, **kw: Any) -> Client:
        return Client(self.socket, **kw)


def new_swarm_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def destroy(socket: Path, name: str) -> None:
    """Remove a test's swarm (and stop its agents), if it still exists."""
    from cfn_client.wire.errors import NotFound

    with Client(socket, timeout_s=60) as cfn, contextlib.suppress(NotFound):
        cfn.swarm_destroy(name, force=True)


# Swarms are destroyed in the background (stopping agents takes a moment), while the
# next test runs; the session waits for every one before it stops cfnd.
_REAPER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="swarm-reaper")
_DESTROYS: list[Future[None]] = []


@pytest.fixture
def swarm(shared_cfnd: CfndProcess) -> Iterator[Swarm]:
    """A new mesh swarm of up to 8 agents, no agents yet, on the shared cfnd."""
    name = new_swarm_name()
    with Client(shared_cfnd.socket, timeout_s=60) as cfn:
        cfn.swarm_init("mesh", 8, name=name)
    try:
        yield Swarm(shared_cfnd.socket, name)
    finally:
        _DESTROYS.append(_REAPER.submit(destroy, shared_cfnd.socket, name))


@contextlib.contextmanager
def follow(socket: Path, swarm_name: str, types: list[str]) -> Iterator[Iterator[Event]]:
    """The swarm's live events of ``types``, on a connection of their own."""
    with (
        Client(socket, timeout_s=60) as watcher,
        watcher.events_follow(swarm_name, types=types) as events,
    ):
        yield iter(events)


def wait_agents(
    cfn: Client, swarm_name: str, count: int, status: str = "idle", agent: str | None = None
) -> list[AgentInfo]:
    """Until ``count`` agents of the swarm (or ``agent``) have ``status``. Subscribes
    first (on a connection of its own), then checks, then re-checks on every agent or
    task event: nothing slips in between."""

    def ready() -> list[AgentInfo] | None:
        agents = [
            a
            for a in cfn.agent_list(swarm_name).agents
            if a.status == status and agent in (None, a.id)
        ]
        return agents if len(agents) >= count else None

    with follow(cfn.socket_path, swarm_name, ["agent", "task"]) as events:
        if (found := ready()) is not None:
            return found
        for _ in events:
            if (found := ready()) is not None:
                return found
    raise AssertionError(f"cfnd ended the event stream before {count} {status} agents")


def started(swarm: Swarm, text: str, **submit: Any) -> tuple[str, str]:
    """Submit ``text`` and wait until an agent started it: (task id, agent id)."""
    with (
        follow(swarm.socket, swarm.name, ["task.started"]) as events,
        swarm.client(timeout_s=60) as cfn,
    ):
        task = cfn.task_submit(text, swarm=swarm.name, **submit)
        for event in events:
            if event.data.get("task") == task.id:
                return task.id, str(event.data["agent"])
    raise AssertionError(f"cfnd ended the event stream before task {task.id} started")


# Tests that run the client as another uid (setpriv) need root.
NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="root")


def cfnctl_as(
    d: CfndProcess, uid: int | None, gid: int, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real cfnctl executable as ``uid``:``gid`` (None: as this test's user, root),
    ``input`` on its stdin."""
    who = [] if uid is None else ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp", "CFN_SOCKET": str(d.socket)}
    return subprocess.run(
        [*who, *CFNCTL, *args], env=env, capture_output=True, text=True, timeout=60,
        check=False, input=input,
    )  # fmt: skip
