"""The Python API of cfnd: every op as a method, results as typed Structs.

    from cfn_client.api.async_ import Client
    with Client() as cfn:
        print(cfn.status().store.mode)

    async with AsyncClient() as cfn:          # asyncio or trio
        results = await cfn.ping()

    with Client() as cfn, cfn.events_follow(types=["task.failed"]) as events:
        for event in events:                  # typed ``Event``s until cfnd ends the stream
            print(event.data)

    with Client() as cfn:                     # a CFN loop run, followed to its end
        run = cfn.loop_start("add a --dry-run flag", max_loop2=3)
        with cfn.loop_follow(run.id) as events:
            for event in events:              # loop.implementer_done, loop.vote, ...
                print(event.type, event.data)
        print(cfn.loop_status(run.id).status)

Arguments are checked against the op's schema before anything is sent, so a
typo fails locally with ``InvalidArgs`` naming the field. Adding an op is one
method per class: ``return self._op("name", NameResult, **args)``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import msgspec

from cfn_client.conn.sync import DEFAULT_TIMEOUT_S, SyncConnection, SyncEventStream
from cfn_client.wire.errors import CfnError, ProtocolError
from cfn_client.wire.ops import OPS
from cfn_client.wire.paths import default_socket_path
from cfn_client.wire.protocol import (
    Args,
    ConfigResetResult,
    ConfigSetResult,
    ConfigShowResult,
    ConfigValidateResult,
    DoctorResult,
    HelloResult,
    PingResult,
    Result,
    StatusResult,
    decode_args,
)
from cfn_client.wire.schema.loop import LoopBacklogResult, LoopListResult, RunInfo
from cfn_client.wire.schema.swarm import (
    AgentInfo,
    AgentListResult,
    AgentRole,
    CountResult,
    DeliveriesResult,
    Event,
    EventsResult,
    Priority,
    Strategy,
    SwarmDestroyResult,
    SwarmInfo,
    SwarmListResult,
    SwarmScaleResult,
    SwarmStatusResult,
    TaskInfo,
    TaskListResult,
    Topology,
)
from cfn_client.wire.schema.workflow import EpicInfo, EpicListResult, EpicSpec

if TYPE_CHECKING:
    # Imported lazily at run time: scripts using only Client (and cfnctl) never load anyio.
    from cfn_client.conn.async_ import AsyncConnection, AsyncEventStream

R = TypeVar("R", bound=Result)

__all__ = [
    "AsyncClient",
    "AsyncEventFollow",
    "Client",
    "EventFollow",
    "build_args",
    "decode_result",
    "wait_request_timeout",
]

# A wait's reply comes when the wait ends: allow at least this much on top for the reply.
WAIT_MARGIN_S = 5.0


def build_args(op: str, args: Mapping[str, Any]) -> Args | dict[str, Any]:
    """Validate ``args`` against a known op's schema; unknown ops pass through unchanged."""
    spec = OPS.get(op)
    if spec is None:
        return dict(args)
    return decode_args(spec.args, dict(args))


def decode_result(op: str, raw: Any, result_type: type[R] | None = None) -> Any:
    """Convert a raw result into the op's Result Struct (raw for ops this client doesn't know)."""
    target: type[Result] | None = result_type or (OPS[op].result if op in OPS else None)
    if target is None:
        return raw
    try:
        return msgspec.convert(raw, target)
    except msgspec.ValidationError as exc:
        raise ProtocolError(
            f"cfnd answered {op!r} with a result this client cannot read ({exc}); "
            "is cfnctl older than the daemon?",
            details={"op": op},
        ) from None


def wait_request_timeout(wait_s: float | None, reply_timeout_s: float) -> float:
    """How long to wait for the reply to a request that itself waits ``wait_s`` (None: no limit)."""
    if wait_s is None:
        return math.inf
    return wait_s + max(reply_timeout_s, WAIT_MARGIN_S)


def _loop_start_args(
    task: str,
    swarm: str | None,
    phase: str | None,
    implementers: Iterable[str] | None,
    validators: Iterable[str] | None,
    owner: str | None,
    max_loop2: int | None,
    max_loop3: int | None,
    complexity: str | None = None,
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "swarm": swarm, "task": task, "phase": phase, "owner": owner,
        "max_loop2": max_loop2, "max_loop3": max_loop3, "complexity": complexity,
    }  # fmt: skip
    # None: leave the field out, so the schema's default team applies.
    if implementers is not None:
        args["implementers"] = list(implementers)
    if validators is not None:
        args["validators"] = list(validators)
    return args


def _events_args(
    swarm: str | None, since_ms: int | None, types: Iterable[str], limit: int
) -> dict[str, Any]:
    return {"swarm": swarm, "since_ms": since_ms, "types": list(types), "limit": limit}


class EventFollow(Iterator[Event]):
    """``events.follow`` or ``loop.follow`` on a blocking client: iterate for ``Event``s
    until the daemon ends the stream.

    Leaving early (``close()``, the end of a ``with`` block, Ctrl-C) closes the
    connection, which is how cfnd learns to stop; the Client reconnects on its next call.
    """

    def __init__(self, raw: SyncEventStream) -> None:
        self._raw = raw
        self._op = raw.op

    @property
    def done(self) -> bool:
        """True once the stream ended (daemon's final response, or ``close()``)."""
        return self._raw.done

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Event:
        event: Event = decode_result(self._op, next(self._raw), Event)
        return event

    def close(self) -> None:
        """Stop following."""
        self._raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncEventFollow:
    """``events.follow`` (or ``op``, another stream of Events) on an async client, over a
    connection of its own.

    ``async with cfn.events_follow() as events: async for event in events: ...``.
    The dedicated connection is closed on exit, so cfnd stops sending even when the
    caller leaves early; the client's shared connection is never tied up.
    """

    def __init__(
        self,
        socket_path: Path,
        timeout_s: float,
        args: Args | dict[str, Any],
        op: str = "events.follow",
    ) -> None:
        self._socket_path = socket_path
        self._timeout_s = timeout_s
        self._args = args
        self._op = op
        self._stack: AsyncExitStack | None = None
        self._raw: AsyncEventStream | None = None

    async def __aenter__(self) -> Self:
        from cfn_client.conn.async_ import AsyncConnection

        stack = AsyncExitStack()
        try:
            conn = await stack.enter_async_context(
                AsyncConnection(self._socket_path, timeout_s=self._timeout_s)
            )
            raw = conn.stream(self._op, self._args, math.inf)
            self._raw = await stack.enter_async_context(raw)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self._raw is None:
            raise CfnError("enter the follow (`async with ... as events`) before iterating")
        event: Event = decode_result(self._op, await self._raw.__anext__(), Event)
        return event


class _ClientBase:
    def __init__(
        self, socket_path: str | Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.socket_path = Path(socket_path) if socket_path is not None else default_socket_path()
        self.timeout_s = timeout_s


class Client(_ClientBase):
    """Blocking client. Connects on first use (or on ``with``); reconnects if the link dropped.

    A request that failed because the daemon went away is never re-sent: only the
    next call opens a new connection. Not thread-safe: use one Client per thread.
    """

    def __init__(
        self, socket_path: str | Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        super().__init__(socket_path, timeout_s)
        self._conn: SyncConnection | None = None

    def connect(self) -> HelloResult:
        """Connect now (instead of on first use) and return the handshake."""
        return self._connection_hello()

    def close(self) -> None:
        """Close the connection; the client may be used again afterwards."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def call(self, op: str, /, **args: Any) -> Any:
        """Run any op; known ops return their Result Struct, others the raw result."""
        raw = self._connection().request(op, build_args(op, args))
        return decode_result(op, raw)

    def stream(
        self, op: str, args: Mapping[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> SyncEventStream:
        """Start a streaming op and iterate its raw events (``math.inf`` = no idle timeout)."""
        return self._connection().stream(op, build_args(op, args or {}), timeout_s)

    def hello(self) -> HelloResult:
        """The daemon's handshake: its version, pid, and who it thinks we are (user, role)."""
        return self._connection_hello()

    def ping(self) -> PingResult:
        """Round-trip to the daemon (no Redis involved)."""
        return self._op("ping", PingResult)

    def status(self, verbose: bool = False) -> StatusResult:
        """Daemon, Redis store and swarm status; ``verbose`` adds server counters."""
        return self._op("status", StatusResult, verbose=verbose)

    def doctor(self) -> DoctorResult:
        """The daemon's self-checks (Redis reachable, persistence, permissions, ...)."""
        return self._op("doctor", DoctorResult)

    def config_show(self, key: str | None = None) -> ConfigShowResult:
        """Effective config entries with their source; one key, or all of them."""
        return self._op("config.show", ConfigShowResult, key=key)

    def config_set(self, key: str, value: str) -> ConfigSetResult:
        """Set a runtime override (stored in Redis); ``value`` is parsed by the key's type."""
        return self._op("config.set", ConfigSetResult, key=key, value=value)

    def config_reset(self, key: str | None = None) -> ConfigResetResult:
        """Drop one runtime override, or all of them when ``key`` is None."""
        return self._op("config.reset", ConfigResetResult, key=key)

    def config_validate(
        self, text: str | None = None, name: str = "<text>"
    ) -> ConfigValidateResult:
        """Validate TOML ``text`` (reported as ``name``), or the daemon's effective config."""
        return self._op("config.validate", ConfigValidateResult, text=text, name=name)

    # -- swarms

    def swarm_init(
        self,
        topology: Topology,
        max_agents: int,
        *,
        strategy: Strategy = "balanced",
        name: str | None = None,
        force: bool = False,
    ) -> SwarmInfo:
        """Create a swarm of up to ``max_agents`` (2-50).

        ``name`` is its id (default: generated); ``force`` replaces a swarm of that name.
        """
        return self._op(
            "swarm.init", SwarmInfo, topology=topology, max_agents=max_agents,
            strategy=strategy, name=name, force=force,
        )  # fmt: skip

    def swarm_list(self) -> SwarmListResult:
        """Every swarm."""
        return self._op("swarm.list", SwarmListResult)

    def swarm_status(self, swarm: str | None = None, verbose: bool = False) -> SwarmStatusResult:
        """A swarm with its agents, queue lengths and task counts (None: the only swarm)."""
        return self._op("swarm.status", SwarmStatusResult, swarm=swarm, verbose=verbose)

    def swarm_scale(
        self, agents: int, *, swarm: str | None = None, type: str = "shell", force: bool = False
    ) -> SwarmScaleResult:
        """Scale to ``agents``: up spawns ``type`` agents, down drains idle ones first
        (busy ones are stopped only with ``force``)."""
        return self._op(
            "swarm.scale", SwarmScaleResult, swarm=swarm, agents=agents, type=type, force=force
        )

    def swarm_destroy(self, swarm: str | None = None, force: bool = False) -> SwarmDestroyResult:
        """Stop a swarm's agents and delete it (``force``: even with busy agents)."""
        return self._op("swarm.destroy", SwarmDestroyResult, swarm=swarm, force=force)

    def swarm_reset(self, swarm: str | None = None, force: bool = False) -> SwarmDestroyResult:
        """Delete every task and agent of a swarm and recreate it empty with the same
        settings (admin only; cfnd refuses without ``force``)."""
        return self._op("swarm.reset", SwarmDestroyResult, swarm=swarm, force=force)

    def swarm_broadcast(
        self, message: str, *, swarm: str | None = None, from_agent: str | None = None
    ) -> DeliveriesResult:
        """Send ``message`` to every agent of the swarm along the topology."""
        return self._op(
            "swarm.broadcast", DeliveriesResult, swarm=swarm, message=message,
            from_agent=from_agent,
        )  # fmt: skip

    # -- agents

    def agent_create(
        self,
        type: str,
        *,
        swarm: str | None = None,
        task: str | None = None,
        role: AgentRole | None = None,
        capabilities: Iterable[str] = (),
        count: int = 1,
    ) -> AgentListResult:
        """Spawn ``count`` agents of ``type`` (optionally starting on ``task``)."""
        return self._op(
            "agent.create", AgentListResult, swarm=swarm, type=type, task=task, role=role,
            capabilities=list(capabilities), count=count,
        )  # fmt: skip

    def agent_list(self, swarm: str | None = None, status: str | None = None) -> AgentListResult:
        """A swarm's agents, optionally only those with ``status``."""
        return self._op("agent.list", AgentListResult, swarm=swarm, status=status)

    def agent_status(self, agent: str, swarm: str | None = None) -> AgentInfo:
        """One agent."""
        return self._op("agent.status", AgentInfo, swarm=swarm, agent=agent)

    def agent_terminate(
        self, agent: str, swarm: str | None = None, force: bool = False
    ) -> AgentInfo:
        """Stop an agent once idle (``force``: now, failing its current task over)."""
        return self._op("agent.terminate", AgentInfo, swarm=swarm, agent=agent, force=force)

    def agent_restart(self, agent: str, swarm: str | None = None) -> AgentInfo:
        """Stop an agent (its task goes back to the queue) and start a fresh one of the
        same type and role; returns the new agent (it has a new id)."""
        return self._op("agent.restart", AgentInfo, swarm=swarm, agent=agent)

    def agent_reset(self, agent: str, swarm: str | None = None) -> AgentInfo:
        """Give an agent's assigned and running tasks back to the queue; clear its load."""
        return self._op("agent.reset", AgentInfo, swarm=swarm, agent=agent)

    def agent_send(
        self, from_agent: str, to_agent: str, message: str, swarm: str | None = None
    ) -> DeliveriesResult:
        """Send ``message`` between two agents; the delivery's path follows the topology."""
        return self._op(
            "agent.send", DeliveriesResult, swarm=swarm, from_agent=from_agent,
            to_agent=to_agent, message=message,
        )  # fmt: skip

    # -- tasks

    def task_submit(
        self,
        text: str,
        *,
        swarm: str | None = None,
        type: str = "shell",
        priority: Priority = "normal",
        timeout_s: float | None = None,
        max_attempts: int | None = None,
    ) -> TaskInfo:
        """Queue a task; ``timeout_s`` bounds each attempt (None: the daemon's default)."""
        return self._op(
            "task.submit", TaskInfo, swarm=swarm, text=text, type=type, priority=priority,
            timeout_s=timeout_s, max_attempts=max_attempts,
        )  # fmt: skip

    def task_list(
        self, swarm: str | None = None, status: str | None = None, limit: int = 100
    ) -> TaskListResult:
        """A swarm's tasks, optionally only those with ``status``."""
        return self._op("task.list", TaskListResult, swarm=swarm, status=status, limit=limit)

    def task_status(self, task: str, swarm: str | None = None) -> TaskInfo:
        """One task, with its result once finished."""
        return self._op("task.status", TaskInfo, swarm=swarm, task=task)

    def task_cancel(self, task: str, swarm: str | None = None) -> TaskInfo:
        """Cancel a queued or running task."""
        return self._op("task.cancel", TaskInfo, swarm=swarm, task=task)

    def task_retry(self, task: str, swarm: str | None = None) -> TaskInfo:
        """Queue a finished (failed, cancelled, dead) task again."""
        return self._op("task.retry", TaskInfo, swarm=swarm, task=task)

    def task_wait(
        self,
        tasks: Iterable[str] = (),
        *,
        all: bool = False,
        timeout_s: float | None = None,
        swarm: str | None = None,
    ) -> TaskListResult:
        """Block until ``tasks`` (or ``all`` of the swarm's) finished, or ``timeout_s`` passed
        (None: no limit); tasks still unfinished then come back with their current status."""
        return self._call(
            "task.wait", TaskListResult,
            {"swarm": swarm, "tasks": list(tasks), "all": all, "timeout_s": timeout_s},
            wait_request_timeout(timeout_s, self.timeout_s),
        )  # fmt: skip

    def task_clean(self, swarm: str | None = None, older_than_s: float = 0) -> CountResult:
        """Delete finished tasks older than ``older_than_s``; returns how many."""
        return self._op("task.clean", CountResult, swarm=swarm, older_than_s=float(older_than_s))

    def dlq_list(self, swarm: str | None = None, limit: int = 100) -> TaskListResult:
        """Dead tasks (out of attempts)."""
        return self._op("dlq.list", TaskListResult, swarm=swarm, limit=limit)

    def dlq_requeue(self, task: str | None = None, swarm: str | None = None) -> CountResult:
        """Queue a dead task again, or every dead task when ``task`` is None."""
        return self._op("dlq.requeue", CountResult, swarm=swarm, task=task)

    # -- events

    def events_list(
        self,
        swarm: str | None = None,
        since_ms: int | None = None,
        types: Iterable[str] = (),
        limit: int = 100,
    ) -> EventsResult:
        """A swarm's recent events, oldest first (``types``: only those)."""
        return self._op("events.list", EventsResult, **_events_args(swarm, since_ms, types, limit))

    def events_follow(
        self,
        swarm: str | None = None,
        since_ms: int | None = None,
        types: Iterable[str] = (),
        limit: int = 100,
    ) -> EventFollow:
        """Live events: ``with cfn.events_follow() as events: for event in events: ...``.

        There is no idle timeout; the connection serves nothing else meanwhile.
        """
        args = build_args("events.follow", _events_args(swarm, since_ms, types, limit))
        return EventFollow(self._connection().stream("events.follow", args, math.inf))

    # -- CFN loop runs

    def loop_start(
        self,
        task: str,
        *,
        swarm: str | None = None,
        phase: str | None = None,
        implementers: Iterable[str] | None = None,
        validators: Iterable[str] | None = None,
        owner: str | None = None,
        max_loop2: int | None = None,
        max_loop3: int | None = None,
        complexity: str | None = None,
    ) -> RunInfo:
        """Start a CFN loop run of ``task``: Loop 3 ``implementers`` and Loop 2
        ``validators`` (agent types; None: a team sized by ``complexity``, default medium),
        Loop 4 ``owner`` (an agent type; None: cfnd's built-in rule). ``max_loop2`` /
        ``max_loop3`` bound rounds and iterations (None: cfnd's configured limits)."""
        return self._op(
            "loop.start", RunInfo,
            **_loop_start_args(
                task, swarm, phase, implementers, validators, owner, max_loop2, max_loop3,
                complexity,
            ),
        )  # fmt: skip

    def loop_status(self, run: str, swarm: str | None = None) -> RunInfo:
        """One run: its state, pending agents, decision and consensus rounds."""
        return self._op("loop.status", RunInfo, swarm=swarm, run=run)

    def loop_list(
        self, swarm: str | None = None, status: str | None = None, limit: int = 100
    ) -> LoopListResult:
        """A swarm's runs, optionally only those with ``status``."""
        return self._op("loop.list", LoopListResult, swarm=swarm, status=status, limit=limit)

    def loop_follow(self, run: str, swarm: str | None = None) -> EventFollow:
        """A run's events: ``with cfn.loop_follow(run) as events: for event in events: ...``.

        cfnd ends the stream once the run is done, cancelled, failed or escalated.
        There is no idle timeout; the connection serves nothing else meanwhile.
        """
        args = build_args("loop.follow", {"swarm": swarm, "run": run})
        return EventFollow(self._connection().stream("loop.follow", args, math.inf))

    def loop_approve(self, run: str, reason: str = "", *, swarm: str | None = None) -> RunInfo:
        """Approve an escalated run (done, decision PROCEED)."""
        return self._op("loop.approve", RunInfo, swarm=swarm, run=run, reason=reason)

    def loop_reject(self, run: str, feedback: str = "", *, swarm: str | None = None) -> RunInfo:
        """Reject an escalated run: a new Loop 2 round starts with ``feedback``."""
        return self._op("loop.reject", RunInfo, swarm=swarm, run=run, feedback=feedback)

    def loop_extend(self, run: str, max_loop2: int, *, swarm: str | None = None) -> RunInfo:
        """Raise a run's Loop 2 budget to ``max_loop2`` rounds (an escalated run goes on)."""
        return self._op("loop.extend", RunInfo, swarm=swarm, run=run, max_loop2=max_loop2)

    def loop_cancel(self, run: str, reason: str = "", *, swarm: str | None = None) -> RunInfo:
        """Cancel a run that has not finished."""
        return self._op("loop.cancel", RunInfo, swarm=swarm, run=run, reason=reason)

    def loop_backlog(self, run: str, *, swarm: str | None = None) -> LoopBacklogResult:
        """The backlog items a DEFER decision left."""
        return self._op("loop.backlog", LoopBacklogResult, swarm=swarm, run=run)

    # -- epics

    def epic_start(
        self, epic: EpicSpec | Mapping[str, Any], *, swarm: str | None = None
    ) -> EpicInfo:
        """Start an epic: its phases run as CFN runs in dependency order."""
        spec = epic if isinstance(epic, EpicSpec) else msgspec.convert(dict(epic), EpicSpec)
        return self._op("epic.start", EpicInfo, swarm=swarm, epic=spec)

    def epic_status(self, epic_id: str, *, swarm: str | None = None) -> EpicInfo:
        """An epic's phases with their runs and statuses."""
        return self._op("epic.status", EpicInfo, swarm=swarm, epic_id=epic_id)

    def epic_list(self, swarm: str | None = None) -> EpicListResult:
        """The swarm's epics, newest first."""
        return self._op("epic.list", EpicListResult, swarm=swarm)

    # -- internals

    def _op(self, op: str, result_type: type[R], /, **args: Any) -> R:
        return self._call(op, result_type, args)

    def _call(
        self, op: str, result_type: type[R], args: dict[str, Any], timeout_s: float | None = None
    ) -> R:
        raw = self._connection().request(op, build_args(op, args), timeout_s)
        out: R = decode_result(op, raw, result_type)
        return out

    def _connection(self) -> SyncConnection:
        if self._conn is None or self._conn.closed:
            conn = SyncConnection(self.socket_path, timeout_s=self.timeout_s)
            conn.connect()
            self._conn = conn
        return self._conn

    def _connection_hello(self) -> HelloResult:
        server = self._connection().server
        assert server is not None  # set by connect()
        return server


class AsyncClient(_ClientBase):
    """Async client (anyio: asyncio or trio); many tasks may share it concurrently.

    Use it as ``async with AsyncClient() as cfn``: the connection's reader task
    lives in that context.
    """

    def __init__(
        self, socket_path: str | Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        super().__init__(socket_path, timeout_s)
        self._conn: AsyncConnection | None = None

    async def connect(self) -> HelloResult:
        """Connect and return the handshake; pair with ``close()`` in the same task."""
        from cfn_client.conn.async_ import AsyncConnection

        if self._conn is not None:
            raise CfnError("already connected")
        conn = AsyncConnection(self.socket_path, timeout_s=self.timeout_s)
        hello = await conn.connect()
        self._conn = conn
        return hello

    async def close(self) -> None:
        """Close the connection, failing requests still in flight."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def call(self, op: str, /, **args: Any) -> Any:
        """Run any op; known ops return their Result Struct, others the raw result."""
        raw = await self._connection().request(op, build_args(op, args))
        return decode_result(op, raw)

    def stream(
        self, op: str, args: Mapping[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> AsyncEventStream:
        """``async with cfn.stream(op, args) as events: async for event in events: ...``."""
        return self._connection().stream(op, build_args(op, args or {}), timeout_s)

    async def hello(self) -> HelloResult:
        """The daemon's handshake: its version, pid, and who it thinks we are (user, role)."""
        server = self._connection().server
        assert server is not None  # set by connect()
        return server

    async def ping(self) -> PingResult:
        """Round-trip to the daemon (no Redis involved)."""
        return await self._op("ping", PingResult)

    async def status(self, verbose: bool = False) -> StatusResult:
        """Daemon, Redis store and swarm status; ``verbose`` adds server counters."""
        return await self._op("status", StatusResult, verbose=verbose)

    async def doctor(self) -> DoctorResult:
        """The daemon's self-checks (Redis reachable, persistence, permissions, ...)."""
        return await self._op("doctor", DoctorResult)

    async def config_show(self, key: str | None = None) -> ConfigShowResult:
        """Effective config entries with their source; one key, or all of them."""
        return await self._op("config.show", ConfigShowResult, key=key)

    async def config_set(self, key: str, value: str) -> ConfigSetResult:
        """Set a runtime override (stored in Redis); ``value`` is parsed by the key's type."""
        return await self._op("config.set", ConfigSetResult, key=key, value=value)

    async def config_reset(self, key: str | None = None) -> ConfigResetResult:
        """Drop one runtime override, or all of them when ``key`` is None."""
        return await self._op("config.reset", ConfigResetResult, key=key)

    async def config_validate(
        self, text: str | None = None, name: str = "<text>"
    ) -> ConfigValidateResult:
        """Validate TOML ``text`` (reported as ``name``), or the daemon's effective config."""
        return await self._op("config.validate", ConfigValidateResult, text=text, name=name)

    # -- swarms

    async def swarm_init(
        self,
        topology: Topology,
        max_agents: int,
        *,
        strategy: Strategy = "balanced",
        name: str | None = None,
        force: bool = False,
    ) -> SwarmInfo:
        """Create a swarm of up to ``max_agents`` (2-50).

        ``name`` is its id (default: generated); ``force`` replaces a swarm of that name.
        """
        return await self._op(
            "swarm.init", SwarmInfo, topology=topology, max_agents=max_agents,
            strategy=strategy, name=name, force=force,
        )  # fmt: skip

    async def swarm_list(self) -> SwarmListResult:
        """Every swarm."""
        return await self._op("swarm.list", SwarmListResult)

    async def swarm_status(
        self, swarm: str | None = None, verbose: bool = False
    ) -> SwarmStatusResult:
        """A swarm with its agents, queue lengths and task counts (None: the only swarm)."""
        return await self._op("swarm.status", SwarmStatusResult, swarm=swarm, verbose=verbose)

    async def swarm_scale(
        self, agents: int, *, swarm: str | None = None, type: str = "shell", force: bool = False
    ) -> SwarmScaleResult:
        """Scale to ``agents``: up spawns ``type`` agents, down drains idle ones first
        (busy ones are stopped only with ``force``)."""
        return await self._op(
            "swarm.scale", SwarmScaleResult, swarm=swarm, agents=agents, type=type, force=force
        )

    async def swarm_destroy(
        self, swarm: str | None = None, force: bool = False
    ) -> SwarmDestroyResult:
        """Stop a swarm's agents and delete it (``force``: even with busy agents)."""
        return await self._op("swarm.destroy", SwarmDestroyResult, swarm=swarm, force=force)

    async def swarm_reset(
        self, swarm: str | None = None, force: bool = False
    ) -> SwarmDestroyResult:
        """Delete every task and agent of a swarm and recreate it empty with the same
        settings (admin only; cfnd refuses without ``force``)."""
        return await self._op("swarm.reset", SwarmDestroyResult, swarm=swarm, force=force)

    async def swarm_broadcast(
        self, message: str, *, swarm: str | None = None, from_agent: str | None = None
    ) -> DeliveriesResult:
        """Send ``message`` to every agent of the swarm along the topology."""
        return await self._op(
            "swarm.broadcast", DeliveriesResult, swarm=swarm, message=message,
            from_agent=from_agent,
        )  # fmt: skip

    # -- agents

    async def agent_create(
        self,
        type: str,
        *,
        swarm: str | None = None,
        task: str | None = None,
        role: AgentRole | None = None,
        capabilities: Iterable[str] = (),
        count: int = 1,
    ) -> AgentListResult:
        """Spawn ``count`` agents of ``type`` (optionally starting on ``task``)."""
        return await self._op(
            "agent.create", AgentListResult, swarm=swarm, type=type, task=task, role=role,
            capabilities=list(capabilities), count=count,
        )  # fmt: skip

    async def agent_list(
        self, swarm: str | None = None, status: str | None = None
    ) -> AgentListResult:
        """A swarm's agents, optionally only those with ``status``."""
        return await self._op("agent.list", AgentListResult, swarm=swarm, status=status)

    async def agent_status(self, agent: str, swarm: str | None = None) -> AgentInfo:
        """One agent."""
        return await self._op("agent.status", AgentInfo, swarm=swarm, agent=agent)

    async def agent_terminate(
        self, agent: str, swarm: str | None = None, force: bool = False
    ) -> AgentInfo:
        """Stop an agent once idle (``force``: now, failing its current task over)."""
        return await self._op("agent.terminate", AgentInfo, swarm=swarm, agent=agent, force=force)

    async def agent_restart(self, agent: str, swarm: str | None = None) -> AgentInfo:
        """Stop an agent (its task goes back to the queue) and start a fresh one of the
        same type and role; returns the new agent (it has a new id)."""
        return await self._op("agent.restart", AgentInfo, swarm=swarm, agent=agent)

    async def agent_reset(self, agent: str, swarm: str | None = None) -> AgentInfo:
        """Give an agent's assigned and running tasks back to the queue; clear its load."""
        return await self._op("agent.reset", AgentInfo, swarm=swarm, agent=agent)

    async def agent_send(
        self, from_agent: str, to_agent: str, message: str, swarm: str | None = None
    ) -> DeliveriesResult:
        """Send ``message`` between two agents; the delivery's path follows the topology."""
        return await self._op(
            "agent.send", DeliveriesResult, swarm=swarm, from_agent=from_agent,
            to_agent=to_agent, message=message,
        )  # fmt: skip

    # -- tasks

    async def task_submit(
        self,
        text: str,
        *,
        swarm: str | None = None,
        type: str = "shell",
        priority: Priority = "normal",
        timeout_s: float | None = None,
        max_attempts: int | None = None,
    ) -> TaskInfo:
        """Queue a task; ``timeout_s`` bounds each attempt (None: the daemon's default)."""
        return await self._op(
            "task.submit", TaskInfo, swarm=swarm, text=text, type=type, priority=priority,
            timeout_s=timeout_s, max_attempts=max_attempts,
        )  # fmt: skip

    async def task_list(
        self, swarm: str | None = None, status: str | None = None, limit: int = 100
    ) -> TaskListResult:
        """A swarm's tasks, optionally only those with ``status``."""
        return await self._op("task.list", TaskListResult, swarm=swarm, status=status, limit=limit)

    async def task_status(self, task: str, swarm: str | None = None) -> TaskInfo:
        """One task, with its result once finished."""
        return await self._op("task.status", TaskInfo, swarm=swarm, task=task)

    async def task_cancel(self, task: str, swarm: str | None = None) -> TaskInfo:
        """Cancel a queued or running task."""
        return await self._op("task.cancel", TaskInfo, swarm=swarm, task=task)

    async def task_retry(self, task: str, swarm: str | None = None) -> TaskInfo:
        """Queue a finished (failed, cancelled, dead) task again."""
        return await self._op("task.retry", TaskInfo, swarm=swarm, task=task)

    async def task_wait(
        self,
        tasks: Iterable[str] = (),
        *,
        all: bool = False,
        timeout_s: float | None = None,
        swarm: str | None = None,
    ) -> TaskListResult:
        """Block until ``tasks`` (or ``all`` of the swarm's) finished, or ``timeout_s`` passed
        (None: no limit); tasks still unfinished then come back with their current status."""
        return await self._call(
            "task.wait", TaskListResult,
            {"swarm": swarm, "tasks": list(tasks), "all": all, "timeout_s": timeout_s},
            wait_request_timeout(timeout_s, self.timeout_s),
        )  # fmt: skip

    async def task_clean(self, swarm: str | None = None, older_than_s: float = 0) -> CountResult:
        """Delete finished tasks older than ``older_than_s``; returns how many."""
        return await self._op(
            "task.clean", CountResult, swarm=swarm, older_than_s=float(older_than_s)
        )

    async def dlq_list(self, swarm: str | None = None, limit: int = 100) -> TaskListResult:
        """Dead tasks (out of attempts)."""
        return await self._op("dlq.list", TaskListResult, swarm=swarm, limit=limit)

    async def dlq_requeue(self, task: str | None = None, swarm: str | None = None) -> CountResult:
        """Queue a dead task again, or every dead task when ``task`` is None."""
        return await self._op("dlq.requeue", CountResult, swarm=swarm, task=task)

    # -- events

    async def events_list(
        self,
        swarm: str | None = None,
        since_ms: int | None = None,
        types: Iterable[str] = (),
        limit: int = 100,
    ) -> EventsResult:
        """A swarm's recent events, oldest first (``types``: only those)."""
        return await self._op(
            "events.list", EventsResult, **_events_args(swarm, since_ms, types, limit)
        )

    def events_follow(
        self,
        swarm: str | None = None,
        since_ms: int | None = None,
        types: Iterable[str] = (),
        limit: int = 100,
    ) -> AsyncEventFollow:
        """Live events: ``async with cfn.events_follow() as events: async for e in events``.

        Runs on a connection of its own (closed on exit), with no idle timeout.
        """
        args = build_args("events.follow", _events_args(swarm, since_ms, types, limit))
        return AsyncEventFollow(self.socket_path, self.timeout_s, args)

    # -- CFN loop runs

    async def loop_start(
        self,
        task: str,
        *,
        swarm: str | None = None,
        phase: str | None = None,
        implementers: Iterable[str] | None = None,
        validators: Iterable[str] | None = None,
        owner: str | None = None,
        max_loop2: int | None = None,
        max_loop3: int | None = None,
        complexity: str | None = None,
    ) -> RunInfo:
        """Start a CFN loop run of ``task``: Loop 3 ``implementers`` and Loop 2
        ``validators`` (agent types; None: a team sized by ``complexity``, default medium),
        Loop 4 ``owner`` (an agent type; None: cfnd's built-in rule). ``max_loop2`` /
        ``max_loop3`` bound rounds and iterations (None: cfnd's configured limits)."""
        return await self._op(
            "loop.start", RunInfo,
            **_loop_start_args(
                task, swarm, phase, implementers, validators, owner, max_loop2, max_loop3,
                complexity,
            ),
        )  # fmt: skip

    async def loop_status(self, run: str, swarm: str | None = None) -> RunInfo:
        """One run: its state, pending agents, decision and consensus rounds."""
        return await self._op("loop.status", RunInfo, swarm=swarm, run=run)

    async def loop_list(
        self, swarm: str | None = None, status: str | None = None, limit: int = 100
    ) -> LoopListResult:
        """A swarm's runs, optionally only those with ``status``."""
        return await self._op("loop.list", LoopListResult, swarm=swarm, status=status, limit=limit)

    def loop_follow(self, run: str, swarm: str | None = None) -> AsyncEventFollow:
        """A run's events: ``async with cfn.loop_follow(run) as events: async for e in events``.

        cfnd ends the stream once the run is done, cancelled, failed or escalated.
        Runs on a connection of its own (closed on exit), with no idle timeout.
        """
        args = build_args("loop.follow", {"swarm": swarm, "run": run})
        return AsyncEventFollow(self.socket_path, self.timeout_s, args, op="loop.follow")

    async def loop_approve(
        self, run: str, reason: str = "", *, swarm: str | None = None
    ) -> RunInfo:
        """Approve an escalated run (done, decision PROCEED)."""
        return await self._op("loop.approve", RunInfo, swarm=swarm, run=run, reason=reason)

    async def loop_reject(
        self, run: str, feedback: str = "", *, swarm: str | None = None
    ) -> RunInfo:
        """Reject an escalated run: a new Loop 2 round starts with ``feedback``."""
        return await self._op("loop.reject", RunInfo, swarm=swarm, run=run, feedback=feedback)

    async def loop_extend(self, run: str, max_loop2: int, *, swarm: str | None = None) -> RunInfo:
        """Raise a run's Loop 2 budget to ``max_loop2`` rounds (an escalated run goes on)."""
        return await self._op("loop.extend", RunInfo, swarm=swarm, run=run, max_loop2=max_loop2)

    async def loop_cancel(self, run: str, reason: str = "", *, swarm: str | None = None) -> RunInfo:
        """Cancel a run that has not finished."""
        return await self._op("loop.cancel", RunInfo, swarm=swarm, run=run, reason=reason)

    async def loop_backlog(self, run: str, *, swarm: str | None = None) -> LoopBacklogResult:
        """The backlog items a DEFER decision left."""
        return await self._op("loop.backlog", LoopBacklogResult, swarm=swarm, run=run)

    # -- epics

    async def epic_start(
        self, epic: EpicSpec | Mapping[str, Any], *, swarm: str | None = None
    ) -> EpicInfo:
        """Start an epic: its phases run as CFN runs in dependency order."""
        spec = epic if isinstance(epic, EpicSpec) else msgspec.convert(dict(epic), EpicSpec)
        return await self._op("epic.start", EpicInfo, swarm=swarm, epic=spec)

    async def epic_status(self, epic_id: str, *, swarm: str | None = None) -> EpicInfo:
        """An epic's phases with their runs and statuses."""
        return await self._op("epic.status", EpicInfo, swarm=swarm, epic_id=epic_id)

    async def epic_list(self, swarm: str | None = None) -> EpicListResult:
        """The swarm's epics, newest first."""
        return await self._op("epic.list", EpicListResult, swarm=swarm)

    # -- internals

    async def _op(self, op: str, result_type: type[R], /, **args: Any) -> R:
        return await self._call(op, result_type, args)

    async def _call(
        self, op: str, result_type: type[R], args: dict[str, Any], timeout_s: float | None = None
    ) -> R:
        raw = await self._connection().request(op, build_args(op, args), timeout_s)
        out: R = decode_result(op, raw, result_type)
        return out

    def _connection(self) -> AsyncConnection:
        if self._conn is None:
            raise CfnError("AsyncClient is not connected: use `async with AsyncClient() as cfn`")
        return self._conn
