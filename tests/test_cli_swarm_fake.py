"""Swarm, agent, task, DLQ and event commands (and their API methods) against a fake cfnd.

``SwarmFake`` extends the connection tests' threaded fake with a small in-memory
model of swarms, agents and tasks, so each command's request (op and args) and
its rendering can be checked without Redis or cfn_daemon. It is not the daemon:
semantics the daemon owns (who is idle, what a path looks like) are only mimicked.
"""

from __future__ import annotations

import itertools
import json
import math
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from click.testing import CliRunner

from cfn_client.api import AsyncClient, Client, wait_request_timeout
from cfn_client.cli import env as commands_pkg
from cfn_client.cli import render
from cfn_client.cli.env import Duration, Since, parse_duration
from cfn_client.cli.main import cfnctl
from cfn_client.wire.errors import EXIT_UNREACHABLE, CfnError, Conflict, InvalidArgs, NotFound
from cfn_client.wire.protocol import EventFrame, Request, Response, decode_args, error_response
from cfn_client.wire.schema.swarm import (
    TERMINAL_TASK_STATUSES,
    AgentInfo,
    AgentListResult,
    CountResult,
    DeliveriesResult,
    Delivery,
    Event,
    EventsArgs,
    EventsResult,
    SwarmDestroyResult,
    SwarmInfo,
    SwarmListResult,
    SwarmScaleResult,
    SwarmStatusResult,
    TaskInfo,
    TaskListResult,
    TaskResult,
)
from tests.test_client_connection import FakeCfnd, sock_dir

__all__ = ["sock_dir"]  # fixture, imported for pytest

T0 = int(time.time() * 1000) - 60_000


class SwarmFake(FakeCfnd):
    """The connection tests' fake plus swarms, agents, tasks and events held in memory.

    Tasks finish when waited for: text ``echo X`` succeeds printing X, ``fail...``
    fails (exit 2, stderr), ``hang...`` never finishes. ``wait_delay_s`` delays
    every ``task.wait`` reply.
    """

    def __init__(self, path: Path, *, agent_limit: int = 50) -> None:
        super().__init__(path)
        self.agent_limit = agent_limit
        self.wait_delay_s = 0.0
        self.endless_follow = False  # follows never get their final response
        self.swarms: dict[str, SwarmInfo] = {}
        self.agents: dict[str, AgentInfo] = {}
        self.tasks: dict[str, TaskInfo] = {}
        self.dead_letters: set[str] = set()  # like cfnd: failed tasks that ran out of attempts
        self.events: list[Event] = []
        self._ids = itertools.count(1)
        self._model = threading.Lock()

    def sent(self, op: str) -> list[dict[str, Any]]:
        """The args of every request for ``op``, in arrival order."""
        return [r.args for r in self.received if r.op == op]

    # -- helpers

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    def _swarm(self, name: str | None) -> SwarmInfo:
        if name is not None:
            if name not in self.swarms:
                raise NotFound(f"no swarm {name!r}", details={"swarm": name})
            return self.swarms[name]
        if len(self.swarms) == 1:
            return next(iter(self.swarms.values()))
        if not self.swarms:
            raise NotFound("no swarm yet; create one with `cfnctl swarm init`")
        raise Conflict(
            f"several swarms ({', '.join(sorted(self.swarms))}); pick one with --swarm",
            details={"swarms": sorted(self.swarms)},
        )

    def _emit(self, swarm: str, type: str, **data: Any) -> None:
        ts = T0 + len(self.events) * 1000
        self.events.append(Event(id=f"{ts}-0", ts_ms=ts, swarm=swarm, type=type, data=data))

    def _agent(self, swarm: str, agent: str) -> AgentInfo:
        found = self.agents.get(agent)
        if found is None or found.swarm != swarm:
            raise NotFound(f"no agent {agent!r} in swarm {swarm}", details={"agent": agent})
        return found

    def _task(self, swarm: str, task: str) -> TaskInfo:
        found = self.tasks.get(task)
        if found is None or found.swarm != swarm:
            raise NotFound(f"no task {task!r} in swarm {swarm}", details={"task": task})
        return found

    def _spawn_agent(self, swarm: str, type: str, **kw: Any) -> AgentInfo:
        agent = AgentInfo(
            id=self._id("a"), swarm=swarm, type=type, role=kw.pop("role", None) or "implementer",
            status="idle", host="box", pid=4242, heartbeat_age_ms=1500, started_ms=T0, **kw,
        )  # fmt: skip
        self.agents[agent.id] = agent
        self.swarms[swarm].agents += 1
        return agent

    def _in(self, swarm: str) -> list[AgentInfo]:
        return [a for a in self.agents.values() if a.swarm == swarm]

    def _finish(self, task: TaskInfo) -> None:
        if task.status in TERMINAL_TASK_STATUSES:
            return
        if task.text.startswith("hang"):
            task.status = "running"
            return
        task.attempts, task.agent = 1, "a1"
        if task.text.startswith("fail"):
            task.status, task.error = "failed", "exit status 2"
            task.result = TaskResult(
                ok=False, agent="a1", attempt=1, exit_code=2, output="partial\n",
                stderr="".join(f"line {i}\n" for i in range(30)) + "boom\n",
                error="exit status 2", duration_ms=12.0,
            )  # fmt: skip
        else:
            task.status = "succeeded"
            out = task.text.removeprefix("echo ") + "\n"
            task.result = TaskResult(
                ok=True, agent="a1", attempt=1, exit_code=0, output=out, duration_ms=3.5
            )

    # -- swarms

    def op_swarm_init(self, a: Any) -> SwarmInfo:
        if a.max_agents > self.agent_limit:
            raise InvalidArgs(
                f"max_agents {a.max_agents} exceeds this daemon's limit {self.agent_limit}",
                details={"value": a.max_agents, "expected": f"<= {self.agent_limit}"},
            )
        sid = self._id("s")
        info = SwarmInfo(
            id=sid, name=a.name or sid, topology=a.topology, strategy=a.strategy,
            max_agents=a.max_agents, status="active", created_ms=T0,
        )  # fmt: skip
        self.swarms[sid] = info
        self._emit(sid, "swarm.created", topology=a.topology)
        return info

    def op_swarm_list(self, a: Any) -> SwarmListResult:
        return SwarmListResult(swarms=list(self.swarms.values()))

    def op_swarm_status(self, a: Any) -> SwarmStatusResult:
        s = self._swarm(a.swarm)
        counts: dict[str, int] = {}
        for t in self.tasks.values():
            if t.swarm == s.id:
                counts[t.status] = counts.get(t.status, 0) + 1
        return SwarmStatusResult(
            swarm=s, agents=self._in(s.id), queues={"high": 0, "normal": counts.get("queued", 0),
            "low": 0}, tasks=counts,
        )  # fmt: skip

    def op_swarm_scale(self, a: Any) -> SwarmScaleResult:
        s = self._swarm(a.swarm)
        live = [x for x in self._in(s.id) if x.status not in ("stopped", "draining")]
        spawned = [self._spawn_agent(s.id, a.type).id for _ in range(a.agents - len(live))]
        stopping: list[str] = []
        surplus = len(live) - a.agents
        for agent in sorted(live, key=lambda x: x.status == "busy"):  # idle ones first
            if len(stopping) >= surplus or (agent.status == "busy" and not a.force):
                break
            agent.status = "draining"
            stopping.append(agent.id)
        return SwarmScaleResult(swarm=s.id, spawned=spawned, stopping=stopping)

    def op_swarm_destroy(self, a: Any) -> SwarmDestroyResult:
        s = self._swarm(a.swarm)
        agents = self._in(s.id)
        if any(x.status == "busy" for x in agents) and not a.force:
            raise Conflict(f"swarm {s.id} has busy agents; use --force")
        for x in agents:
            del self.agents[x.id]
        del self.swarms[s.id]
        return SwarmDestroyResult(swarm=s.id, stopped_agents=[x.id for x in agents])

    def op_swarm_reset(self, a: Any) -> SwarmDestroyResult:
        if not a.force:
            raise InvalidArgs("swarm.reset needs force")
        s = self._swarm(a.swarm)
        agents = self._in(s.id)
        for x in agents:
            del self.agents[x.id]
        s.agents = 0
        return SwarmDestroyResult(swarm=s.id, stopped_agents=[x.id for x in agents])

    def op_swarm_broadcast(self, a: Any) -> DeliveriesResult:
        s = self._swarm(a.swarm)
        src = a.from_agent or "cfnd"
        to = [x.id for x in self._in(s.id) if x.id != a.from_agent]
        return DeliveriesResult(
            message_id="m1", deliveries=[Delivery(to=t, path=[src, "hub", t]) for t in to]
        )

    # -- agents

    def op_agent_create(self, a: Any) -> AgentListResult:
        s = self._swarm(a.swarm)
        made = [
            self._spawn_agent(
                s.id, a.type, role=a.role, capabilities=list(a.capabilities),
                current_task=a.task,
            )
            for _ in range(a.count)
        ]  # fmt: skip
        return AgentListResult(agents=made)

    def op_agent_list(self, a: Any) -> AgentListResult:
        s = self._swarm(a.swarm)
        return AgentListResult(
            agents=[x for x in self._in(s.id) if a.status is None or x.status == a.status]
        )

    def op_agent_status(self, a: Any) -> AgentInfo:
        return self._agent(self._swarm(a.swarm).id, a.agent)

    def op_agent_terminate(self, a: Any) -> AgentInfo:
        agent = self._agent(self._swarm(a.swarm).id, a.agent)
        agent.status = "draining" if agent.status == "busy" and not a.force else "stopped"
        return agent

    def op_agent_restart(self, a: Any) -> AgentInfo:
        agent = self._agent(self._swarm(a.swarm).id, a.agent)
        agent.status, agent.restarts = "starting", agent.restarts + 1
        return agent

    def op_agent_reset(self, a: Any) -> AgentInfo:
        agent = self._agent(self._swarm(a.swarm).id, a.agent)
        agent.status, agent.tasks_failed = "idle", 0
        return agent

    def op_agent_send(self, a: Any) -> DeliveriesResult:
        s = self._swarm(a.swarm)
        self._agent(s.id, a.from_agent)
        self._agent(s.id, a.to_agent)
        path = [a.from_agent, "hub", a.to_agent]
        return DeliveriesResult(message_id="m2", deliveries=[Delivery(to=a.to_agent, path=path)])

    # -- tasks

    def op_task_submit(self, a: Any) -> TaskInfo:
        s = self._swarm(a.swarm)
        task = TaskInfo(
            id=self._id("t"), swarm=s.id, text=a.text, type=a.type, priority=a.priority,
            status="queued", max_attempts=a.max_attempts or 3, created_ms=T0, updated_ms=T0,
            timeout_s=a.timeout_s,
        )  # fmt: skip
        self.tasks[task.id] = task
        return task

    def op_task_list(self, a: Any) -> TaskListResult:
        s = self._swarm(a.swarm)
        tasks = [t for t in self.tasks.values() if t.swarm == s.id]
        return TaskListResult(
            tasks=[t for t in tasks if a.status is None or t.status == a.status][: a.limit]
        )

    def op_task_status(self, a: Any) -> TaskInfo:
        return self._task(self._swarm(a.swarm).id, a.task)

    def op_task_cancel(self, a: Any) -> TaskInfo:
        task = self._task(self._swarm(a.swarm).id, a.task)
        task.status = "cancelled"
        return task

    def op_task_retry(self, a: Any) -> TaskInfo:
        task = self._task(self._swarm(a.swarm).id, a.task)
        task.status, task.result = "queued", None
        return task

    def op_task_wait(self, a: Any) -> TaskListResult:
        time.sleep(self.wait_delay_s)
        s = self._swarm(a.swarm)
        if a.all:
            tasks = [t for t in self.tasks.values() if t.swarm == s.id]
        else:
            tasks = [self._task(s.id, t) for t in a.tasks]
        for t in tasks:
            self._finish(t)
        return TaskListResult(tasks=tasks)

    def op_task_clean(self, a: Any) -> CountResult:
        s = self._swarm(a.swarm)
        gone = [
            t.id
            for t in self.tasks.values()
            if t.swarm == s.id
            and t.status in TERMINAL_TASK_STATUSES
            and t.id not in self.dead_letters
        ]
        for tid in gone:
            del self.tasks[tid]
        return CountResult(count=len(gone))

    def op_dlq_list(self, a: Any) -> TaskListResult:
        s = self._swarm(a.swarm)
        return TaskListResult(
            tasks=[t for t in self.tasks.values() if t.swarm == s.id and t.id in self.dead_letters]
        )

    def op_dlq_requeue(self, a: Any) -> CountResult:
        s = self._swarm(a.swarm)
        dead = [t for t in self.tasks.values() if t.swarm == s.id and t.id in self.dead_letters]
        chosen = [t for t in dead if a.task is None or t.id == a.task]
        for t in chosen:
            t.status = "queued"
            self.dead_letters.discard(t.id)
        return CountResult(count=len(chosen))

    # -- events

    def _events(self, a: EventsArgs) -> list[Event]:
        s = self._swarm(a.swarm)
        return [
            e
            for e in self.events
            if e.swarm == s.id
            and (not a.types or e.type in a.types)
            and (a.since_ms is None or e.ts_ms >= a.since_ms)
        ][-a.limit :]

    def op_events_list(self, a: Any) -> EventsResult:
        return EventsResult(events=self._events(a))

    def _handle(self, conn: socket.socket, lock: threading.Lock, req: Request) -> bool:
        if req.op != "events.follow":
            with self._model:
                return super()._handle(conn, lock, req)
        # The stream: every matching event, then the final response (as when a swarm ends).
        try:
            with self._model:
                events = self._events(decode_args(EventsArgs, req.args))
        except CfnError as err:
            self._write(conn, lock, error_response(req.id, err))
            return True
        for event in events:
            self._write(conn, lock, EventFrame(id=req.id, event=event))
        if not self.endless_follow:
            self._write(conn, lock, Response(id=req.id, ok=True, result=None))
        return True


@pytest.fixture
def fake(sock_dir: Path) -> Iterator[SwarmFake]:
    with SwarmFake(sock_dir / "s.sock") as f:
        yield f


@pytest.fixture
def swarm(fake: SwarmFake) -> SwarmFake:
    """A fake holding one mesh swarm ``s1`` with two idle shell agents ``a2``, ``a3``."""
    code, _, err = run(fake, "swarm", "init", "mesh", "8")
    assert code == 0, err
    code, _, err = run(fake, "agent", "create", "shell", "--count", "2")
    assert code == 0, err
    fake.received.clear()
    return fake


def run(
    fake: FakeCfnd, *args: str, input: str | None = None, env: dict[str, str | None] | None = None
) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cfnctl, ["--socket", str(fake.path), *args], input=input,
        env={"CFN_SWARM": None, **(env or {})},
    )  # fmt: skip
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


# --------------------------------------------------------------------------- swarms


def test_swarm_init_sends_args_and_renders(fake: SwarmFake) -> None:
    code, out, err = run(fake, "swarm", "init", "mesh", "8")
    assert code == 0, err
    assert out.strip() == "swarm s1 created: mesh, balanced, up to 8 agents"
    assert fake.sent("swarm.init") == [{"topology": "mesh", "max_agents": 8}]
    code, out, _ = run(
        fake, "--json", "swarm", "init", "star", "50", "--strategy", "reliability",
        "--name", "web", "--force",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["name"] == "web"
    assert fake.sent("swarm.init")[-1] == {
        "topology": "star", "max_agents": 50, "strategy": "reliability", "name": "web",
        "force": True,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["meshh", "8"], "'meshh' is not one of 'mesh', 'hierarchical', 'ring', 'star'"),
        (["mesh", "51"], "a swarm has 2 to 50 agents, not 51"),
        (["ring", "1"], "a swarm has 2 to 50 agents, not 1"),
        (["ring", "many"], "'many' is not a valid integer"),
        (["ring", "4", "--strategy", "fast"], "'fast' is not one of"),
    ],
)
def test_swarm_init_usage_errors_exit_2_without_a_request(
    fake: SwarmFake, args: list[str], message: str
) -> None:
    code, _, err = run(fake, "swarm", "init", *args)
    assert code == 2
    assert message in err
    code, out, _ = run(fake, "--json", "swarm", "init", *args)
    doc = json.loads(out)
    assert (code, doc["error"]["code"]) == (2, "usage_error")
    assert message in doc["error"]["message"]
    assert fake.sent("swarm.init") == []


def test_swarm_init_daemon_limit_is_the_authority(sock_dir: Path) -> None:
    with SwarmFake(sock_dir / "l.sock", agent_limit=10) as fake:
        code, _, err = run(fake, "swarm", "init", "mesh", "20")
    assert code == 1
    assert "error[invalid_args]: max_agents 20 exceeds this daemon's limit 10" in err


def test_current_swarm_from_flag_env_or_the_only_one(swarm: SwarmFake) -> None:
    # One swarm: no --swarm needed, and none is sent.
    code, _, err = run(swarm, "task", "list")
    assert code == 0, err
    assert swarm.sent("task.list") == [{}]
    run(swarm, "swarm", "init", "ring", "4")
    code, _, err = run(swarm, "task", "list")
    assert code == 1
    assert "several swarms (s1, s4); pick one with --swarm" in err
    code, _, err = run(swarm, "--swarm", "s4", "task", "list")
    assert code == 0, err
    code, _, err = run(swarm, "task", "list", env={"CFN_SWARM": "s1"})
    assert code == 0, err
    code, _, err = run(swarm, "--swarm", "s4", "task", "list", env={"CFN_SWARM": "s1"})
    assert code == 0, err
    assert [a.get("swarm") for a in swarm.sent("task.list")[1:]] == [None, "s4", "s1", "s4"]
    code, _, err = run(swarm, "--swarm", "nope", "agent", "list")
    assert (code, "error[not_found]: no swarm 'nope'" in err) == (1, True)


def test_swarm_list_and_status(swarm: SwarmFake) -> None:
    code, out, _ = run(swarm, "swarm", "list")
    assert code == 0
    assert header(out) == ["ID", "NAME", "TOPOLOGY", "STRATEGY", "AGENTS", "STATUS", "AGE"]
    assert out.splitlines()[1].split()[:6] == ["s1", "s1", "mesh", "balanced", "2/8", "active"]
    run(swarm, "run", "echo hi")
    code, out, _ = run(swarm, "swarm", "status")
    assert code == 0
    assert (field(out, "queued"), field(out, "tasks")) == ("normal 1", "queued 1")
    agents = out.split("\n\n")[1].splitlines()
    assert agents[0].split() == [
        "ID", "TYPE", "ROLE", "STATUS", "TASK", "HEARTBEAT", "DONE/FAILED",
    ]  # fmt: skip
    assert agents[1].split() == ["a2", "shell", "implementer", "idle", "-", "1.5s", "0/0"]
    code, out, _ = run(swarm, "swarm", "status", "--verbose")
    assert "CAPABILITIES" in out
    assert "box" in out
    code, out, _ = run(swarm, "--json", "swarm", "status")
    doc = json.loads(out)
    assert (doc["swarm"]["id"], len(doc["agents"]), doc["queues"]["normal"]) == ("s1", 2, 1)
    # A positional ID wins over --swarm.
    code, _, err = run(swarm, "--swarm", "zz", "swarm", "status", "s1", "-v")
    assert code == 0, err
    assert swarm.sent("swarm.status")[-1] == {"swarm": "s1", "verbose": True}


def test_swarm_list_empty(fake: SwarmFake) -> None:
    code, out, _ = run(fake, "swarm", "list")
    assert (code, out.strip()) == (
        0, "no swarms (create one with `cfnctl swarm init TOPOLOGY MAX_AGENTS`)",
    )  # fmt: skip
    code, out, _ = run(fake, "--json", "swarm", "list")
    assert json.loads(out) == {"swarms": []}


def test_swarm_scale_up_and_down(swarm: SwarmFake) -> None:
    code, out, _ = run(swarm, "swarm", "scale", "4", "--type", "claude")
    assert (code, out.strip()) == (0, "swarm s1: spawned 2 (a4, a5)")
    swarm.agents["a2"].status = "busy"
    code, out, _ = run(swarm, "swarm", "scale", "1")
    assert out.strip() == "swarm s1: stopping 3 (a3, a4, a5)"  # busy a2 kept
    code, out, _ = run(swarm, "swarm", "scale", "1")
    assert out.strip() == "swarm s1: already at that size"
    code, out, _ = run(swarm, "--json", "swarm", "scale", "0", "--force")
    assert json.loads(out) == {"swarm": "s1", "spawned": [], "stopping": ["a2"]}
    assert swarm.sent("swarm.scale") == [
        {"agents": 4, "type": "claude"}, {"agents": 1}, {"agents": 1},
        {"agents": 0, "force": True},
    ]  # fmt: skip
    code, _, _ = run(swarm, "swarm", "scale", "-1")
    assert code == 2


def test_swarm_destroy_and_reset(swarm: SwarmFake) -> None:
    swarm.agents["a2"].status = "busy"
    code, _, err = run(swarm, "swarm", "destroy")
    assert code == 1
    assert "error[conflict]: swarm s1 has busy agents; use --force" in err
    code, _, err = run(swarm, "swarm", "reset")
    assert code == 2
    assert "confirm with --force" in err
    assert swarm.sent("swarm.reset") == []
    code, out, _ = run(swarm, "swarm", "reset", "--force")
    assert (code, out.strip()) == (0, "swarm s1 reset; stopped 2 agent(s): a2, a3")
    assert swarm.sent("swarm.reset") == [{"force": True}]
    code, out, _ = run(swarm, "swarm", "destroy", "--force")
    assert (code, out.strip()) == (0, "swarm s1 destroyed; no agents")
    assert swarm.sent("swarm.destroy")[-1] == {"force": True}


def test_swarm_broadcast_prints_paths(swarm: SwarmFake) -> None:
    code, out, _ = run(swarm, "swarm", "broadcast", "hello all")
    assert code == 0
    assert out.splitlines() == [
        "message m1 delivered to 2 agent(s):", "cfnd -> hub -> a2", "cfnd -> hub -> a3",
    ]  # fmt: skip
    code, out, _ = run(swarm, "--json", "swarm", "broadcast", "hi", "--from", "a2")
    assert json.loads(out)["deliveries"] == [{"to": "a3", "path": ["a2", "hub", "a3"]}]
    assert swarm.sent("swarm.broadcast") == [
        {"message": "hello all"}, {"message": "hi", "from_agent": "a2"},
    ]  # fmt: skip


# --------------------------------------------------------------------------- agents


def test_agent_create_sends_every_option(swarm: SwarmFake) -> None:
    code, out, _ = run(
        swarm, "agent", "create", "claude", "review the diff", "--role", "validator",
        "--capability", "python", "--capability", "git", "--count", "2",
    )  # fmt: skip
    assert code == 0
    assert header(out)[:4] == ["ID", "TYPE", "ROLE", "STATUS"]
    rows = [line.split()[:5] for line in out.splitlines()[1:]]
    assert rows == [
        ["a4", "claude", "validator", "idle", "review"],
        ["a5", "claude", "validator", "idle", "review"],
    ]
    assert swarm.sent("agent.create") == [{
        "type": "claude", "task": "review the diff", "role": "validator",
        "capabilities": ["python", "git"], "count": 2,
    }]  # fmt: skip
    for bad in (["--role", "boss"], ["--count", "0"]):
        code, _, _ = run(swarm, "agent", "create", "shell", *bad)
        assert code == 2


def test_agent_list_status_and_changes(swarm: SwarmFake) -> None:
    code, out, _ = run(swarm, "agent", "list", "--status", "idle")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["a2", "a3"]
    code, out, _ = run(swarm, "agent", "list", "--status", "busy")
    assert out.strip() == "no agents"
    code, _, err = run(swarm, "agent", "list", "--status", "sleepy")
    assert code == 2
    assert swarm.sent("agent.list") == [{"status": "idle"}, {"status": "busy"}]

    code, out, _ = run(swarm, "agent", "status", "a2")
    assert code == 0
    assert (field(out, "agent"), field(out, "heartbeat")) == ("a2", "1.5s ago")
    code, _, err = run(swarm, "agent", "status", "a9")
    assert (code, "error[not_found]: no agent 'a9'" in err) == (1, True)

    swarm.agents["a2"].status = "busy"
    code, out, _ = run(swarm, "agent", "terminate", "a2")
    assert out.strip() == "agent a2 (shell) terminated; now draining"
    code, out, _ = run(swarm, "agent", "terminate", "a3", "--force")
    assert out.strip() == "agent a3 (shell) terminated; now stopped"
    code, out, _ = run(swarm, "agent", "restart", "a3")
    assert out.strip() == "agent a3 (shell) restarted; now starting"
    swarm.agents["a3"].id = "a9"  # cfnd answers a restart with the new agent
    code, out, _ = run(swarm, "agent", "restart", "a3")
    assert out.strip() == "agent a3 restarted as a9 (shell); now starting"
    swarm.agents["a3"].id = "a3"
    code, out, _ = run(swarm, "--json", "agent", "reset", "a3")
    assert json.loads(out)["restarts"] == 2
    assert swarm.sent("agent.terminate") == [{"agent": "a2"}, {"agent": "a3", "force": True}]
    assert swarm.sent("agent.reset") == [{"agent": "a3"}]


def test_agent_send_prints_the_path(swarm: SwarmFake) -> None:
    code, out, _ = run(swarm, "agent", "send", "a2", "a3", "ping?")
    assert (code, out) == (0, "a2 -> hub -> a3\n")
    assert swarm.sent("agent.send") == [{"from_agent": "a2", "to_agent": "a3", "message": "ping?"}]
    code, _, _ = run(swarm, "agent", "send", "a2", "a3")
    assert code == 2


# --------------------------------------------------------------------------- run


def test_run_prints_only_the_id(swarm: SwarmFake) -> None:
    code, out, err = run(swarm, "run", "echo hi")
    assert (code, out, err) == (0, "t4\n", "")
    (sent,) = swarm.sent("task.submit")
    assert sent.pop("idempotency_key").startswith("c-")  # one per submit, reused on retry
    assert sent == {"text": "echo hi"}
    code, out, _ = run(
        swarm, "--json", "run", "make test", "--type", "claude", "--priority", "high",
        "--max-attempts", "5", "--task-timeout", "2m",
    )  # fmt: skip
    doc = json.loads(out)
    assert (doc["id"], doc["status"], doc["max_attempts"]) == ("t5", "queued", 5)
    last = swarm.sent("task.submit")[-1]
    last.pop("idempotency_key")
    assert last == {
        "text": "make test", "type": "claude", "priority": "high", "timeout_s": 120.0,
        "max_attempts": 5,
    }  # fmt: skip
    assert swarm.sent("task.wait") == []


def test_run_wait_success_prints_output_and_exits_0(swarm: SwarmFake) -> None:
    code, out, err = run(swarm, "run", "echo hello world", "--wait")
    assert (code, out, err) == (0, "hello world\n", "")
    assert swarm.sent("task.wait") == [{"swarm": "s1", "tasks": ["t4"]}]
    code, out, _ = run(swarm, "--json", "run", "echo x", "--wait", "--timeout", "30")
    doc = json.loads(out)
    assert (code, doc["status"], doc["result"]["output"]) == (0, "succeeded", "x\n")
    assert swarm.sent("task.wait")[-1]["timeout_s"] == 30.0


def test_run_wait_failure_exits_1_with_stderr_tail(swarm: SwarmFake) -> None:
    code, out, err = run(swarm, "run", "fail please", "--wait")
    assert code == 1
    assert out == "partial\n"  # what it printed before failing
    lines = err.splitlines()
    assert lines[0] == "task t4 failed (exit code 2): exit status 2"
    assert lines[-1] == "boom"
    assert len(lines) == 1 + render.STDERR_TAIL_LINES
    code, out, err = run(swarm, "--json", "run", "fail again", "--wait")
    assert (code, json.loads(out)["status"], err) == (1, "failed", "")


def test_run_wait_timeout_exits_1_and_task_keeps_running(swarm: SwarmFake) -> None:
    code, out, err = run(swarm, "run", "hang forever", "--wait", "--timeout", "0.5")
    assert (code, out) == (1, "")
    assert "stopped waiting after 0.5s; still unfinished (they keep running): t4" in err
    assert swarm.tasks["t4"].status == "running"
    assert swarm.sent("task.wait") == [{"swarm": "s1", "tasks": ["t4"], "timeout_s": 0.5}]


def test_run_usage_errors(swarm: SwarmFake) -> None:
    for args in (
        ["run", "x", "--timeout", "5"],  # --timeout belongs to --wait
        ["run", "x", "--priority", "urgent"],
        ["run", "x", "--wait", "--timeout", "soon"],
        ["run", "x", "--max-attempts", "0"],
        ["run"],
    ):
        code, _, _ = run(swarm, *args)
        assert code == 2, args
    assert swarm.sent("task.submit") == []


# --------------------------------------------------------------------------- tasks


def test_task_list_status_cancel_retry(swarm: SwarmFake) -> None:
    run(swarm, "run", "echo a")
    run(swarm, "run", "fail b")
    run(swarm, "task", "wait", "--all")
    code, out, _ = run(swarm, "task", "list")
    assert header(out) == [
        "ID", "STATUS", "PRIORITY", "TYPE", "AGENT", "ATTEMPTS", "AGE", "TEXT",
    ]  # fmt: skip
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [
        ["t4", "succeeded"], ["t5", "failed"],
    ]  # fmt: skip
    code, out, _ = run(swarm, "task", "list", "--status", "failed", "--limit", "5")
    assert len(out.splitlines()) == 2
    assert swarm.sent("task.list")[-1] == {"status": "failed", "limit": 5}
    code, _, _ = run(swarm, "task", "list", "--status", "bogus")
    assert code == 2

    code, out, _ = run(swarm, "task", "status", "t5")
    assert code == 0
    shown = {k: field(out, k) for k in ("status", "result", "exit code", "duration", "attempts")}
    assert shown == {
        "status": "failed", "result": "FAILED", "exit code": "2", "duration": "12 ms",
        "attempts": "1/3",
    }  # fmt: skip
    assert "output:\n  partial" in out
    assert "stderr:\n  line 0" in out
    code, out, _ = run(swarm, "--json", "task", "status", "t4")
    assert json.loads(out)["result"]["exit_code"] == 0

    code, out, _ = run(swarm, "task", "retry", "t5")
    assert out.strip() == "task t5 queued again; now queued"
    code, out, _ = run(swarm, "task", "cancel", "t5")
    assert out.strip() == "task t5 cancelled; now cancelled"
    code, _, err = run(swarm, "task", "cancel", "t99")
    assert (code, "error[not_found]" in err) == (1, True)
    assert swarm.sent("task.cancel") == [{"task": "t5"}, {"task": "t99"}]


def test_task_wait_exit_codes_and_table(swarm: SwarmFake) -> None:
    for text in ("echo one", "echo two", "fail three", "hang four"):
        run(swarm, "run", text)
    code, out, err = run(swarm, "task", "wait", "t4", "t5")
    assert (code, err) == (0, "")
    assert header(out) == ["ID", "STATUS", "EXIT", "AGENT", "DURATION", "ERROR"]
    assert out.splitlines()[-1] == "2 of 2 succeeded"
    assert swarm.sent("task.wait") == [{"tasks": ["t4", "t5"]}]
    code, out, err = run(swarm, "task", "wait", "t4", "t6")
    assert code == 1
    assert "t6  failed     2     a1     12 ms     exit status 2" in out
    code, out, err = run(swarm, "task", "wait", "--all", "--timeout", "1m")
    assert code == 1
    assert out.splitlines()[-1] == "2 of 4 succeeded, 1 still unfinished"
    assert "still unfinished (they keep running): t7" in err
    assert swarm.sent("task.wait")[-1] == {"all": True, "timeout_s": 60.0}
    code, out, _ = run(swarm, "--json", "task", "wait", "t4")
    assert (code, [t["status"] for t in json.loads(out)["tasks"]]) == (0, ["succeeded"])
    for args in (["task", "wait"], ["task", "wait", "t4", "--all"]):
        code, _, err = run(swarm, *args)
        assert code == 2
        assert "give task IDs or --all (not both)" in err


def test_task_clean(swarm: SwarmFake) -> None:
    run(swarm, "run", "echo a")
    run(swarm, "task", "wait", "--all")
    code, out, _ = run(swarm, "task", "clean", "--older-than", "1h")
    assert (code, out.strip()) == (0, "removed 1 finished task(s)")
    code, out, _ = run(swarm, "--json", "task", "clean")
    assert json.loads(out) == {"count": 0}
    assert swarm.sent("task.clean") == [{"older_than_s": 3600.0}, {}]
    code, _, _ = run(swarm, "task", "clean", "--older-than", "-5")
    assert code == 2


def test_dlq_list_and_requeue(swarm: SwarmFake, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(swarm, "dlq", "list")
    assert (code, out) == (0, "no dead tasks\n")
    for text in ("fail a", "fail b"):
        run(swarm, "run", text)
    run(swarm, "task", "wait", "--all")
    for tid in ("t4", "t5"):
        swarm.tasks[tid].status = "failed"
        swarm.dead_letters.add(tid)
    code, out, _ = run(swarm, "dlq", "list")
    assert header(out)[-1] == "ERROR"
    assert out.splitlines()[1].split()[:2] == ["t4", "failed"]
    assert out.splitlines()[1].endswith("exit status 2")
    code, out, _ = run(swarm, "dlq", "requeue", "t4")
    assert (code, out.strip()) == (0, "requeued 1 task(s)")
    # Everything: refused without --yes when nobody can be asked.
    for args in (["dlq", "requeue"], ["--json", "dlq", "requeue"]):
        code, out, err = run(swarm, *args, input="y\n")
        assert code == 2
        assert "needs --yes" in out + err
    monkeypatch.setattr(commands_pkg, "interactive", lambda: True)
    code, _, err = run(swarm, "dlq", "requeue", input="n\n")
    assert code == 1
    assert "Requeue every dead task?" in err
    code, out, _ = run(swarm, "dlq", "requeue", input="y\n")
    assert (code, out.strip().splitlines()[-1]) == (0, "requeued 1 task(s)")
    code, out, _ = run(swarm, "--json", "dlq", "requeue", "--yes")
    assert json.loads(out) == {"count": 0}
    assert swarm.sent("dlq.requeue") == [{"task": "t4"}, {}, {}]


# --------------------------------------------------------------------------- events


def test_events_list_filters_and_renders(swarm: SwarmFake) -> None:
    swarm._emit("s1", "task.failed", task="t1", error="x" * 100)
    code, out, _ = run(swarm, "events")
    assert code == 0
    assert header(out) == ["TIME", "TYPE", "DATA"]
    lines = out.splitlines()
    assert "swarm.created" in lines[1]
    assert "topology=mesh" in lines[1]
    assert "task=t1 error=xxx" in lines[2]
    assert lines[2].endswith("...")  # long values are cut
    code, out, _ = run(swarm, "--json", "events", "--type", "task.failed", "--limit", "5")
    doc = json.loads(out)
    assert [e["type"] for e in doc["events"]] == ["task.failed"]
    assert swarm.sent("events.list")[-1] == {"types": ["task.failed"], "limit": 5}
    before = int(time.time() * 1000)
    run(swarm, "events", "--since", "10m")
    since = swarm.sent("events.list")[-1]["since_ms"]
    assert before - 600_000 - 5_000 <= since <= before - 600_000 + 5_000
    run(swarm, "events", "--since", "1700000000000")
    assert swarm.sent("events.list")[-1] == {"since_ms": 1_700_000_000_000}
    code, _, err = run(swarm, "events", "--since", "yesterday-ish")
    assert code == 2
    assert "is neither a duration ago" in err


def test_events_follow_json_lines_until_stream_end(swarm: SwarmFake) -> None:
    swarm._emit("s1", "agent.spawned", agent="a2")
    swarm._emit("s1", "task.queued", task="t1")
    code, out, err = run(swarm, "--json", "events", "--follow")
    assert (code, err) == (0, "")
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["type"] for d in docs] == ["swarm.created", "agent.spawned", "task.queued"]
    assert docs[1]["data"] == {"agent": "a2"}
    code, out, err = run(swarm, "events", "-f", "--type", "task.queued")
    assert code == 0
    assert "task.queued" in out.splitlines()[0]
    assert out.splitlines()[0].endswith("  task=t1")
    assert "cfnd ended the event stream" in err
    assert swarm.sent("events.follow") == [{}, {"types": ["task.queued"]}]


def test_events_follow_ctrl_c_exits_0(swarm: SwarmFake, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(event: Event) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(render, "event_line", interrupted)
    code, out, err = run(swarm, "events", "--follow")
    assert (code, out, err) == (0, "", "")


def test_events_follow_ctrl_c_in_a_real_process(swarm: SwarmFake) -> None:
    swarm.endless_follow = True
    cfnctl_bin = str(Path(sys.executable).parent / "cfnctl")
    proc = subprocess.Popen(
        [cfnctl_bin, "--socket", str(swarm.path), "--timeout", "0.5", "events", "--follow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the stream is open; then it idles, past --timeout
        assert "swarm.created" in first
        time.sleep(1.0)
        assert proc.poll() is None  # no per-frame timeout on a follow
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert (proc.returncode, err) == (0, "")


def test_events_follow_error_is_reported(fake: SwarmFake) -> None:
    code, _, err = run(fake, "events", "--follow")
    assert code == 1
    assert "no swarm yet" in err


# --------------------------------------------------------------------------- no daemon


@pytest.mark.parametrize(
    "args",
    [
        ["swarm", "init", "mesh", "4"], ["swarm", "list"], ["swarm", "status"],
        ["swarm", "scale", "3"], ["swarm", "destroy"], ["swarm", "reset", "--force"],
        ["swarm", "broadcast", "hi"], ["agent", "create", "shell"], ["agent", "list"],
        ["agent", "status", "a1"], ["agent", "terminate", "a1"], ["agent", "restart", "a1"],
        ["agent", "reset", "a1"], ["agent", "send", "a1", "a2", "hi"], ["run", "x"],
        ["run", "x", "--wait"], ["task", "list"], ["task", "status", "t1"],
        ["task", "cancel", "t1"], ["task", "wait", "--all"], ["task", "retry", "t1"],
        ["task", "clean"], ["dlq", "list"], ["dlq", "requeue", "--yes"], ["events"],
        ["events", "--follow"],
    ],
)  # fmt: skip
def test_every_swarm_command_reports_unreachable(sock_dir: Path, args: list[str]) -> None:
    result = CliRunner().invoke(cfnctl, ["--socket", str(sock_dir / "none.sock"), *args])
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    assert "systemctl start cfnd" in result.stderr


# --------------------------------------------------------------------------- API


def test_wait_request_timeout_covers_the_wait() -> None:
    assert wait_request_timeout(None, 10) == math.inf
    assert wait_request_timeout(30, 10) == 40
    assert wait_request_timeout(30, 0.1) == 35  # never less than the margin


def test_client_task_wait_outlasts_the_reply_timeout(swarm: SwarmFake) -> None:
    swarm.wait_delay_s = 0.6
    with Client(swarm.path, timeout_s=0.2) as cfn:
        task = cfn.task_submit("echo slow")
        done = cfn.task_wait([task.id], timeout_s=0.1)  # reply in 0.6s > 0.2s: still fine
        assert [t.status for t in done.tasks] == ["succeeded"]
        done = cfn.task_wait(all=True)  # no limit at all
        assert done.tasks[0].result is not None
        assert done.tasks[0].result.output == "slow\n"


def test_client_methods_return_typed_results(swarm: SwarmFake) -> None:
    with Client(swarm.path) as cfn:
        assert cfn.swarm_list().swarms[0].topology == "mesh"
        assert isinstance(cfn.swarm_status(verbose=True), SwarmStatusResult)
        assert cfn.agent_status("a2").status == "idle"
        assert [d.path for d in cfn.agent_send("a2", "a3", "x").deliveries] == [["a2", "hub", "a3"]]
        assert cfn.task_list(limit=1).tasks == []
        assert cfn.dlq_requeue().count == 0
        with cfn.events_follow(types=["swarm.created"]) as events:
            got = list(events)
        assert [type(e) for e in got] == [Event]
        assert got[0].data == {"topology": "mesh"}
        assert events.done
        assert cfn.events_list().events == got  # the client reconnects if needed
        with pytest.raises(InvalidArgs, match="priority"):
            cfn.task_submit("x", priority="urgent")  # type: ignore[arg-type]


async def test_async_client_methods_and_follow(swarm: SwarmFake) -> None:
    async with AsyncClient(swarm.path, timeout_s=0.2) as cfn:
        swarm.wait_delay_s = 0.5
        task = await cfn.task_submit("echo async", priority="high")
        done = await cfn.task_wait([task.id], timeout_s=0.1)
        assert done.tasks[0].status == "succeeded"
        swarm.wait_delay_s = 0.0
        created = await cfn.agent_create("shell", role="coordinator", capabilities=["x"])
        assert created.agents[0].capabilities == ["x"]
        async with cfn.events_follow(since_ms=0) as events:
            got = [e async for e in events]
        assert [e.type for e in got] == ["swarm.created"]
        # The follow had its own connection: the shared one is untouched.
        assert (await cfn.swarm_scale(2)).stopping == ["a2"]
        with anyio.fail_after(5):
            async with cfn.events_follow() as events:
                async for event in events:
                    assert isinstance(event, Event)
                    break
        assert (await cfn.task_status(task.id)).result is not None


def test_every_new_op_builds_valid_args() -> None:
    # The methods' keyword names match the schemas: a rename on either side fails here.
    from cfn_client.wire.ops import OPS

    for op, spec in OPS.items():
        if not op.startswith(("swarm.", "agent.", "task.", "dlq.", "events.")):
            continue
        fields = {f.encode_name for f in msgspec.structs.fields(spec.args)}
        method = getattr(Client, op.replace(".", "_"))
        params = set(method.__code__.co_varnames[1 : method.__code__.co_argcount])
        params |= set(method.__kwdefaults__ or {})
        client_only = {"retries"}  # how often the client re-sends, not an argument
        assert params - client_only <= fields | {"self"}, (op, params - fields)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25),
     ("2d", 172800.0), ("1.5h", 5400.0)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "1h-2m", "inf", "nan", "-3", "5 m"])
def test_bad_durations(text: str) -> None:
    import click

    with pytest.raises(click.BadParameter):
        Duration().convert(text, None, None)
    assert parse_duration(text) is None


def test_since_forms() -> None:
    now = time.time() * 1000
    assert abs(Since().convert("1h", None, None) - (now - 3_600_000)) < 5_000
    assert Since().convert("1700000000000", None, None) == 1_700_000_000_000
    iso = Since().convert("2024-05-01T14:00", None, None)
    assert time.localtime(iso / 1000)[:5] == (2024, 5, 1, 14, 0)


def test_render_helpers() -> None:
    assert render.shorten("a  b\nc") == "a b c"
    assert render.shorten("x" * 60, 10) == "xxxxxxx..."
    assert render.format_counts({"a": 0, "b": 2}) == "b 2"
    assert render.format_counts({}) == "none"
    assert render.format_age(None) == "-"
    assert render.format_age(1000, now=91_000) == "1m 30s"
    assert render.format_time(0) == "-"
