# GENERATED from cfn_client/api/async_.py by `python -m cfn_client.api.generate`:
# do not edit by hand (a test fails when this file is stale).
"""The blocking client: every op of cfnd as a method, results as typed Structs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from cfn_client.api.base import (
    RETRYABLE_SUBMIT_ERRORS,
    SUBMIT_RETRIES,
    build_args,
    chunk_bytes,
    events_args,
    loop_start_args,
    new_task_id,
    submit_pauses,
    utf8_chunks,
    wait_request_timeout,
)
from cfn_client.api.sync_admin import AdminOps
from cfn_client.api.sync_batch import BatchOps
from cfn_client.api.sync_transport import EventFollow
from cfn_client.wire.errors import InvalidArgs
from cfn_client.wire.schema.loop import (
    LoopApplyResult,
    LoopBacklogResult,
    LoopCleanResult,
    LoopListResult,
    RunInfo,
)
from cfn_client.wire.schema.observe import MetricsResult
from cfn_client.wire.schema.swarm import (
    AgentInfo,
    AgentListResult,
    AgentRole,
    CountResult,
    DeliveriesResult,
    EventsResult,
    Priority,
    Strategy,
    SwarmDestroyResult,
    SwarmInfo,
    SwarmListResult,
    SwarmScaleResult,
    SwarmStatusResult,
    TaskChunk,
    TaskField,
    TaskInfo,
    TaskListResult,
    TaskUploadResult,
    Topology,
)
from cfn_client.wire.schema.system import (
    ConfigResetResult,
    ConfigSetResult,
    ConfigShowResult,
    ConfigValidateResult,
    DoctorResult,
    PingResult,
    StatusResult,
    WebLoginResult,
)
from cfn_client.wire.schema.team import TeamInfo, TeamRole, TeamSyncResult
from cfn_client.wire.schema.workflow import EpicInfo, EpicListResult, EpicSpec

__all__ = ["Client"]


class Client(BatchOps, AdminOps):
    """cfnd's client: every op as a method, each result a typed Struct.

    ``AsyncClient`` (anyio: asyncio or trio) lives in ``async with AsyncClient() as cfn``
    and may be shared by many tasks; ``Client`` (blocking) connects on first use, reconnects
    on the call after a dropped link and is not thread-safe. Arguments are checked against
    the op's schema before anything is sent: a typo fails locally with ``InvalidArgs``.
    """

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

    def web_login(self, role: str | None = None) -> WebLoginResult:
        """A one-time login URL of the web console, at your role or the lower ``role``."""
        return self._op("web.login", WebLoginResult, role=role)

    # -- teams

    def team_role_create(
        self,
        name: str,
        description: str,
        *,
        grants: Iterable[str] = (),
        agent_types: Iterable[str] = (),
    ) -> TeamInfo:
        """Create a team role granting access roles / ``exec`` and an agent pool."""
        return self._op(
            "team.role_create",
            TeamInfo,
            name=name,
            description=description,
            grants=list(grants),
            agent_types=list(agent_types),
        )

    def team_assign(self, user: str, role: str) -> TeamInfo:
        """Give ``user`` the team role ``role``."""
        return self._op("team.assign", TeamInfo, user=user, role=role)

    def team_list(self) -> TeamInfo:
        """The team roles and their members."""
        return self._op("team.list", TeamInfo)

    def team_sync(
        self,
        roles: Iterable[TeamRole],
        members: Mapping[str, list[str]],
        *,
        dry_run: bool = False,
    ) -> TeamSyncResult:
        """Replace the team by ``roles`` and ``members`` (idempotent); the changes."""
        return self._op(
            "team.sync",
            TeamSyncResult,
            roles=[msgspec.to_builtins(r) for r in roles],
            members={u: list(rs) for u, rs in members.items()},
            dry_run=dry_run,
        )

    # -- swarms

    def swarm_init(
        self,
        topology: Topology | None = None,
        max_agents: int | None = None,
        *,
        strategy: Strategy | None = None,
        name: str | None = None,
        force: bool = False,
        test_mode: bool = False,
        ttl_s: float | None = None,
    ) -> SwarmInfo:
        """Create a swarm of up to ``max_agents`` (2-50).

        ``name`` is its id (default: generated); ``force`` replaces a swarm of that name.
        None for topology, max_agents or strategy takes cfnd's ``[swarm]`` default.
        ``test_mode``: ephemeral, removed when cfnd stops or after ``ttl_s`` (default 1h).
        """
        return self._op(
            "swarm.init", SwarmInfo, topology=topology, max_agents=max_agents,
            strategy=strategy, name=name, force=force, test_mode=test_mode, ttl_s=ttl_s,
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
        type: str | None = "shell",
        priority: Priority = "normal",
        timeout_s: float | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        retries: int = SUBMIT_RETRIES,
    ) -> TaskInfo:
        """Queue a task; ``timeout_s`` bounds each attempt (None: the daemon's default).
        ``type`` None: cfnd's default agent type (``[swarm] default_type``).

        A text too large for one frame is sent first in chunks (``task.upload``), then
        submitted by its upload id. The returned record's text may be clipped.

        The submit names its task (an id picked here) or carries ``idempotency_key``,
        and is retried up to ``retries`` times with the same id or key when no answer
        came (timeout, lost link, store outage): cfnd returns the task already
        submitted under it, so a retried submit never queues (or runs) the task twice.
        """
        upload = None
        chunk = chunk_bytes((self.hello()).max_frame_bytes)
        if len(text) > chunk // 4 and len(text.encode()) > chunk:
            for piece in utf8_chunks(text, chunk):
                upload = (self.task_upload(piece, upload=upload, swarm=swarm)).upload
            text = ""
        # A picked id needs no key of its own in Redis (nor its look-up per submit).
        task_id = None if idempotency_key else new_task_id()
        for pause in submit_pauses(retries):
            try:
                return self._op(
                    "task.submit", TaskInfo, swarm=swarm, text=text, upload=upload, type=type,
                    priority=priority, timeout_s=timeout_s, max_attempts=max_attempts,
                    idempotency_key=idempotency_key, task_id=task_id,
                )  # fmt: skip
            except RETRYABLE_SUBMIT_ERRORS:
                if pause is None:
                    raise
            self._pause(pause)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def task_upload(
        self, data: str, *, upload: str | None = None, swarm: str | None = None
    ) -> TaskUploadResult:
        """Append ``data`` to a task text being uploaded (None: start a new upload)."""
        return self._op("task.upload", TaskUploadResult, swarm=swarm, data=data, upload=upload)

    def task_list(
        self,
        swarm: str | None = None,
        status: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> TaskListResult:
        """A page of a swarm's tasks (summaries, newest first), optionally only those
        with ``status``; pass ``next_cursor`` as ``cursor`` for the next page."""
        return self._op(
            "task.list", TaskListResult, swarm=swarm, status=status, limit=limit, cursor=cursor
        )

    def task_status(self, task: str, swarm: str | None = None) -> TaskInfo:
        """One task, with its result once finished (``clipped`` if it is too large for
        one reply: ``task_field`` gets the whole text, output or stderr)."""
        return self._op("task.status", TaskInfo, swarm=swarm, task=task)

    def task_read(
        self,
        task: str,
        field: TaskField = "output",
        *,
        offset: int = 0,
        limit_bytes: int = 256 * 1024,
        swarm: str | None = None,
    ) -> TaskChunk:
        """A byte range of a task's ``text``, ``output`` or ``stderr``."""
        return self._op(
            "task.read", TaskChunk, swarm=swarm, task=task, field=field, offset=offset,
            limit_bytes=limit_bytes,
        )  # fmt: skip

    def task_field(
        self, task: str, field: TaskField = "output", *, swarm: str | None = None
    ) -> str:
        """A task's whole ``text``, ``output`` or ``stderr``, read range by range."""
        chunk = chunk_bytes((self.hello()).max_frame_bytes)
        parts: list[str] = []
        offset = 0
        while True:
            got = self.task_read(task, field, offset=offset, limit_bytes=chunk, swarm=swarm)
            parts.append(got.data)
            if got.eof or got.next_offset <= offset:
                return "".join(parts)
            offset = got.next_offset

    def task_full(self, task: TaskInfo) -> TaskInfo:
        """``task`` with its clipped text, output and stderr fetched whole (unchanged if
        nothing was clipped)."""
        if not task.clipped:
            return task
        full = self.task_status(task.id, swarm=task.swarm)
        if task.text_bytes is not None or full.text_bytes is not None:
            full.text = self.task_field(task.id, "text", swarm=task.swarm)
            full.text_bytes = None
        res = full.result
        if res is not None:
            if res.output_bytes is not None:
                res.output = self.task_field(task.id, "output", swarm=task.swarm)
                res.output_bytes = None
            if res.stderr_bytes is not None:
                res.stderr = self.task_field(task.id, "stderr", swarm=task.swarm)
                res.stderr_bytes = None
        return full

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
        """Block until ``tasks`` (or, with ``all``, every unfinished task of the swarm, new
        ones included) finished (``timeout_s`` None: no limit). If ``timeout_s`` passes
        first, raises ``RequestTimeout`` whose ``details["pending"]`` lists the unfinished
        tasks; they keep running.

        The result holds task summaries that fit in one reply, ``counts`` by status of all
        of them and how many were ``omitted`` (with ``all``: what finished during the wait,
        listing the failed and cancelled ones)."""
        return self._call(
            "task.wait", TaskListResult,
            {"swarm": swarm, "tasks": list(tasks), "all": all, "timeout_s": timeout_s},
            wait_request_timeout(timeout_s, self.timeout_s),
        )  # fmt: skip

    def task_clean(self, swarm: str | None = None, older_than_s: float = 0) -> CountResult:
        """Delete finished tasks older than ``older_than_s``; returns how many."""
        return self._op("task.clean", CountResult, swarm=swarm, older_than_s=float(older_than_s))

    def dlq_list(self, swarm: str | None = None, limit: int = 100) -> TaskListResult:
        """Dead tasks (out of attempts), as summaries."""
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
        return self._op("events.list", EventsResult, **events_args(swarm, since_ms, types, limit))

    def events_follow(
        self,
        swarm: str | None = None,
        since_ms: int | None = None,
        types: Iterable[str] = (),
        limit: int = 100,
    ) -> EventFollow:
        """Live events as typed ``Event``s until cfnd ends the stream; leave the block to stop.

        There is no idle timeout (the async client follows on a connection of its own).
        """
        args = build_args("events.follow", events_args(swarm, since_ms, types, limit))
        return self._follow("events.follow", args)

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
        mode: str | None = None,
        gate_threshold: float | None = None,
        consensus_threshold: float | None = None,
        repo: str | None = None,
        base: str | None = None,
        checks: Iterable[str] = (),
        no_change_ok: bool = False,
        compete: bool = False,
        budget_usd: float | None = None,
    ) -> RunInfo:
        """Start a CFN loop run of ``task``: Loop 3 ``implementers`` and Loop 2
        ``validators`` (agent types; None: a team sized by ``complexity``, default medium),
        Loop 4 ``owner`` (an agent type; None: cfnd's built-in rule). ``max_loop2`` /
        ``max_loop3`` bound rounds and iterations (None: cfnd's configured limits);
        ``mode`` (mvp, standard, enterprise) presets gate, consensus, iterations and the
        validator count. With ``repo`` each implementer works in its own git worktree
        branched from ``base``, every command in ``checks`` must pass on the candidate,
        ``compete`` makes each implementer's branch a candidate of its own, and the run
        stops launching agents once it spent ``budget_usd``."""
        return self._op(
            "loop.start", RunInfo,
            **loop_start_args(
                task, swarm, phase, implementers, validators, owner, max_loop2, max_loop3,
                complexity, mode=mode, gate_threshold=gate_threshold,
                consensus_threshold=consensus_threshold, repo=repo, base=base,
                checks=list(checks), no_change_ok=no_change_ok, compete=compete,
                budget_usd=budget_usd,
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
        """A run's events as typed ``Event``s; leave the block to stop following.

        cfnd ends the stream once the run is done, cancelled, failed or escalated.
        There is no idle timeout.
        """
        args = build_args("loop.follow", {"swarm": swarm, "run": run})
        return self._follow("loop.follow", args)

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

    def loop_apply(
        self,
        run: str,
        how: str = "merge",
        *,
        file: str | None = None,
        repo: str | None = None,
        swarm: str | None = None,
    ) -> LoopApplyResult:
        """Bring a run's winning branch into the current branch of its repository
        (``merge``, ``squash``) or write it as a patch ``file``; refuses a dirty tree."""
        return self._op(
            "loop.apply", LoopApplyResult, swarm=swarm, run=run, how=how, file=file, repo=repo
        )

    def loop_clean(self, run: str, *, swarm: str | None = None) -> LoopCleanResult:
        """Remove a finished run's worktrees and ``cfn/<run>/*`` branches."""
        return self._op("loop.clean", LoopCleanResult, swarm=swarm, run=run)

    # -- epics

    def epic_start(
        self, epic: EpicSpec | Mapping[str, Any], *, swarm: str | None = None
    ) -> EpicInfo:
        """Start an epic: its phases run as CFN runs in dependency order."""
        try:
            spec = epic if isinstance(epic, EpicSpec) else msgspec.convert(dict(epic), EpicSpec)
        except msgspec.ValidationError as exc:
            raise InvalidArgs(f"invalid epic: {exc}", details={"reason": str(exc)}) from None
        return self._op("epic.start", EpicInfo, swarm=swarm, epic=spec)

    def epic_status(self, epic_id: str, *, swarm: str | None = None) -> EpicInfo:
        """An epic's phases with their runs and statuses."""
        return self._op("epic.status", EpicInfo, swarm=swarm, epic_id=epic_id)

    def epic_list(self, swarm: str | None = None) -> EpicListResult:
        """The swarm's epics, newest first."""
        return self._op("epic.list", EpicListResult, swarm=swarm)

    def metrics_agents(self, swarm: str | None = None, agent: str | None = None) -> MetricsResult:
        """Agents' recent performance (every swarm's, or one swarm's, or one agent's)."""
        return self._op("metrics.agents", MetricsResult, swarm=swarm, agent=agent)
