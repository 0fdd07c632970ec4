"""CFN loop runs: the pure state machine of loop.py driven by real agents.

Storage (all under the swarm's hash tag): ``run:{id}`` hash holds the state as
JSON, the status, the agent types and the consensus outcome of every round;
``run:{id}:log`` is the stream of applied events; ``runs`` indexes the runs.

Every event is applied with ``loop.step`` and persisted (log entry + state, one
MULTI) *before* anything is done about it. What must run is derived from the
persisted state alone: each implementer / validator / owner step is a task with a
deterministic id pinned to its agent, and submitting an id that exists is a no-op.
So a cfnd killed at any point resumes the run where it stopped: tasks that ran
keep their stored results (read back, not recomputed) and votes are counted once
per validator and round.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import msgspec
import structlog

from cfn_client.wire.errors import Conflict, InvalidArgs, NotFound
from cfn_client.wire.schema.loop import (
    MODES,
    SIZING,
    LoopApplyArgs,
    LoopApplyResult,
    LoopCleanResult,
    LoopStartArgs,
    ModePreset,
    RunInfo,
)
from cfn_client.wire.schema.swarm import Event
from cfn_daemon.agent import types as agent_types
from cfn_daemon.cfnloop import retention
from cfn_daemon.cfnloop.announce import announcements
from cfn_daemon.cfnloop.drivers import DriverPool
from cfn_daemon.cfnloop.evidence import WorkspaceInfo
from cfn_daemon.cfnloop.steps import RunSteps
from cfn_daemon.cfnloop.workspaces import check_repo, expand
from cfn_daemon.core import loop
from cfn_daemon.core.placement import LIVE_STATUSES
from cfn_daemon.core.run_records import impl_task_id, run_info, spend
from cfn_daemon.queue import events
from cfn_daemon.queue.events import emit, queue_events
from cfn_daemon.queue.notify import NotifyHub, Pulse
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.settings.schema import LoopConfig
from cfn_daemon.store.client import is_outage
from cfn_daemon.swarm.service import SwarmService
from cfn_daemon.util.aio import until_stopped

log = structlog.get_logger("cfn.loop")
RECHECK_S = 2.0
ENDS_FOLLOW = frozenset({"loop.finished", "loop.escalated"})
_json = msgspec.json.Encoder()


class LoopService:
    """Starts, drives, resumes and answers questions about CFN runs."""

    def __init__(self, swarms: SwarmService, hub: NotifyHub) -> None:
        self.swarms = swarms
        self.hub = hub
        self.keys = swarms.store.keys
        self._locks: dict[str, asyncio.Lock] = {}
        self._pulses: dict[str, Pulse] = {}
        self.steps = RunSteps(swarms)
        self.drivers = DriverPool("run", swarms.keeper)

    @property
    def redis(self) -> Any:
        return self.swarms.redis

    # ------------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> asyncio.Event:
        return self.drivers.ready

    @property
    def _stop(self) -> asyncio.Event:
        return self.drivers.stop

    async def run(self, stop: asyncio.Event) -> None:
        """Resume every unfinished run, then drive runs until ``stop``."""
        await self.drivers.run(stop, self.swarms.ready, self._resume)

    async def _resume(self) -> None:
        self.drivers.start("workspace-retention", self._retention)
        for info in await self.swarms.all():
            for raw in await self.redis.zrange(self.keys.runs(info.id), 0, -1):
                run_id = raw.decode()
                async with self.drivers.skip_broken("run", run_id):
                    if (await self._load(info.id, run_id)).status not in loop.TERMINAL:
                        self._drive(info.id, run_id)

    async def _retention(self) -> None:
        """Remove finished runs' worktrees and branches after ``loop.workspace_retention_s``,
        and the runs themselves after ``loop.run_retention_s``."""
        while not self._stop.is_set():
            cfg = self.swarms.config().loop
            try:
                await self._sweep(cfg.workspace_retention_s)
                run_cutoff = now_ms() - int(cfg.run_retention_s * 1000)
                for info in await self.swarms.all():
                    await retention.expire_runs(self.redis, self.keys, info.id, run_cutoff)
            except Exception as exc:
                if is_outage(exc):  # waited out: the next pass tries again
                    log.warning("retention_store_unavailable", error=str(exc))
                else:
                    log.exception("workspace_retention_failed", error=str(exc))
            pause = min(max(min(cfg.workspace_retention_s, cfg.run_retention_s) / 4, 0.2), 3600.0)
            await until_stopped(asyncio.sleep(pause), self._stop)

    async def _sweep(self, retention_s: float) -> None:
        cutoff = now_ms() - int(retention_s * 1000)
        for info in await self.swarms.all():
            for raw in await self.redis.zrange(self.keys.runs(info.id), 0, -1):
                run_id = raw.decode()
                fields = await self._fields(info.id, run_id)
                if "workspace" not in fields or "ws:cleaned" in fields:
                    continue
                if int(fields.get("updated_ms", 0)) > cutoff:
                    continue
                if (await self._load(info.id, run_id)).status not in loop.TERMINAL:
                    continue
                cleaned = await self.clean(info.id, run_id)
                await self.redis.hset(self.keys.run(info.id, run_id), "ws:cleaned", now_ms())
                await emit(
                    self.redis,
                    self.keys,
                    info.id,
                    "loop.cleaned",
                    {"run": run_id, "worktrees": len(cleaned.worktrees),
                     "branches": len(cleaned.branches)},
                )  # fmt: skip

    def _drive(self, swarm: str, run_id: str) -> None:
        self.drivers.start(run_id, lambda: self._driver(swarm, run_id))

    def _pulse(self, run_id: str) -> Pulse:
        return self._pulses.setdefault(run_id, Pulse())

    # ------------------------------------------------------------------ storage

    async def _load(self, swarm: str, run_id: str) -> loop.RunState:
        raw = await self.redis.hget(self.keys.run(swarm, run_id), "state")
        if not raw:
            raise NotFound(
                f"no run {run_id!r} in swarm {swarm}; `cfnctl loop list` shows runs",
                details={"run": run_id, "swarm": swarm},
            )
        return msgspec.json.decode(raw, type=loop.RunState)

    async def _fields(self, swarm: str, run_id: str) -> dict[str, Any]:
        raw = await self.redis.hgetall(self.keys.run(swarm, run_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def apply(self, swarm: str, run_id: str, event: Any) -> loop.RunState:
        """Step the machine and persist (log + state in one MULTI) before any effect."""
        lock = self._locks.setdefault(run_id, asyncio.Lock())
        async with lock:
            state = await self._load(swarm, run_id)
            new, effects = loop.step(state, event)
            rejected = [e for e in effects if isinstance(e, loop.Rejected)]
            if rejected:
                raise Conflict(
                    f"run {run_id} is {state.status}: {rejected[0].reason}",
                    details={"status": state.status},
                )
            said = announcements(
                state, new, event, effects, await self._extra(swarm, run_id, new, event)
            )
            now = now_ms()
            # Log entry, state and the step's events in one MULTI: a crash never leaves
            # a persisted step unannounced (or an announced one unpersisted).
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(
                    self.keys.run_log(swarm, run_id),
                    {"seq": new.seq, "event": _json.encode(event), "ts": now},
                )
                pipe.hset(
                    self.keys.run(swarm, run_id),
                    mapping={
                        "state": _json.encode(new),
                        "status": new.status,
                        "updated_ms": now,
                    },
                )
                queue_events(pipe, self.keys, swarm, list(said))
                await pipe.execute()
        self._pulse(run_id).fire()
        return new

    async def _extra(
        self, swarm: str, run_id: str, state: loop.RunState, event: Any
    ) -> dict[str, dict[str, Any]]:
        """Cost and result details for the step's announcements (from the run hash)."""
        if not isinstance(event, loop.ImplementerDone) and state.status not in loop.TERMINAL:
            return {}
        fields = await self._fields(swarm, run_id)
        extra: dict[str, dict[str, Any]] = {}
        if isinstance(event, loop.ImplementerDone) and event.round and event.iteration:
            tid = impl_task_id(run_id, event.round, event.iteration, event.agent)
            if f"cost:{tid}" in fields:
                cost = msgspec.json.decode(fields[f"cost:{tid}"])
                extra["loop.implementer_done"] = {"cost_usd": cost.get("usd", 0.0)}
        if state.status in loop.TERMINAL:
            total = spend(fields)
            done: dict[str, Any] = {
                "cost_usd": total.usd,
                "input_tokens": total.input_tokens,
                "output_tokens": total.output_tokens,
            }
            if state.status == "done" and fields.get("result_branch"):
                done |= {"branch": fields["result_branch"], "commit": fields["result_commit"]}
            extra["loop.finished"] = done
        return extra

    # ------------------------------------------------------------------ ops

    async def start(
        self, args: LoopStartArgs, run_id: str | None = None, epic: str | None = None
    ) -> RunInfo:
        """Start a run; with ``run_id`` (an epic's reserved id) at most once: a run of
        that id that exists already is returned as it is."""
        swarm = await self.swarms.resolve(args.swarm)
        if run_id is not None and await self.redis.exists(self.keys.run(swarm, run_id)):
            return await self.info(swarm, run_id)
        cfg = self.swarms.config().loop
        preset = MODES[args.mode] if args.mode else None
        sized_impl, sized_val = SIZING[args.complexity or "medium"]
        impl_types = list(args.implementers) or list(sized_impl)
        val_types = list(args.validators) or _sized(sized_val, preset.validators if preset else 0)
        limits = _limits(args, cfg, preset)
        repo = args.repo or cfg.repo
        checks = list(args.checks)
        ws: WorkspaceInfo | None = None
        if repo is not None:
            top, base = await check_repo(repo, args.base or cfg.base)
            ws = WorkspaceInfo(
                repo=str(top), base=base, base_ref=args.base or cfg.base, checks=checks,
                checker=None,
            )  # fmt: skip
        elif checks or args.compete:
            raise InvalidArgs(
                "--check and --compete need a repository: pass --repo PATH (or set [loop] repo)",
                details={"expected": "repo"},
            )
        self._check_binaries([*impl_types, *val_types, *([args.owner] if args.owner else [])])
        taken: set[str] = set()
        spawned: list[str] = []
        try:
            implementers = await self._recruit(swarm, impl_types, "implementer", taken, spawned)
            validators = await self._recruit(swarm, val_types, "validator", taken, spawned)
            owner = (
                (await self._recruit(swarm, [args.owner], "owner", taken, spawned))[0]
                if args.owner
                else None
            )
            if ws is not None and checks:
                (checker,) = await self._recruit(swarm, ["checker"], "implementer", taken, spawned)
                ws = replace(ws, checker=checker)
            run_id = run_id or new_run_id()
            state = loop.RunState(
                run_id=run_id,
                task=args.task,
                implementers=implementers,
                validators=validators,
                owner=owner,
                phase=args.phase,
                limits=limits,
                workspace=ws is not None,
                no_change_ok=args.no_change_ok,
                compete=args.compete,
                budget_usd=args.budget_usd if args.budget_usd is not None else cfg.budget_usd,
            )
            now = now_ms()
            mapping: dict[str, Any] = {
                "state": _json.encode(state),
                "status": state.status,
                "created_ms": now,
                "updated_ms": now,
                "mode": args.mode or "",
            }
            if epic is not None:
                mapping["epic"] = epic  # it expires with its epic, never on its own
            if ws is not None:
                mapping["workspace"] = ws.encode()
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.run(swarm, run_id), mapping=mapping)
                pipe.zadd(self.keys.runs(swarm), {run_id: now})
                await pipe.execute()
        except BaseException:
            # A start that fails (no room for the team, say, or Redis went away
            # before the run was written) leaves no agent behind.
            await self._dismiss(swarm, spawned)
            raise
        started: dict[str, Any] = {
            "run": run_id,
            "task": args.task,
            "implementers": implementers,
            "validators": validators,
            "owner": owner,
        }
        if ws is not None:
            started |= {"repo": ws.repo, "base": ws.base, "checks": checks}
        await emit(self.redis, self.keys, swarm, "loop.started", started)
        await self.apply(swarm, run_id, loop.Start())
        self._drive(swarm, run_id)
        return await self.info(swarm, run_id)

    def _check_binaries(self, types: list[str]) -> None:
        """Refuse now, with the install hint, rather than after three failed retries."""
        configured = self.swarms.config().agent_types
        for agent_type in dict.fromkeys(types):
            agent_types.require_runnable(agent_type, configured)

    async def _dismiss(self, swarm: str, agents: list[str]) -> None:
        """Stop agents a failed start spawned (bounded: one request per agent)."""
        if not agents:
            return
        rt = await self.swarms.runtime(swarm)
        for agent_id in agents:
            try:
                await rt.supervisor.request_stop(agent_id, force=True)
            except Exception as exc:
                log.warning("loop_start_cleanup_failed", agent=agent_id, error=str(exc))
        log.info("loop_start_failed_agents_stopped", swarm=swarm, agents=agents)

    async def _recruit(
        self, swarm: str, types: list[str], role: str, taken: set[str], spawned: list[str]
    ) -> list[str]:
        """An agent per requested type: an idle one of the swarm, else a new one (its id
        also goes to ``spawned``)."""
        agents = [a for a in await self.swarms.registry.all(swarm) if a.status in LIVE_STATUSES]
        rt = await self.swarms.runtime(swarm)
        out = []
        for agent_type in types:
            # A run names slots: a replacement of a dead agent serves the same slot.
            free = [a for a in agents if a.type == agent_type and a.slot_id not in taken]
            if free:
                # An idle one first: a busy one would make this run wait for another's.
                chosen = min(free, key=lambda a: a.status != "idle").slot_id
            else:
                (chosen,) = await rt.supervisor.spawn(agent_type, role=role)
                spawned.append(chosen)
            taken.add(chosen)
            out.append(chosen)
        return out

    async def apply_result(self, swarm: str, args: LoopApplyArgs) -> LoopApplyResult:
        """``loop apply``: the run's result into the user's branch (or a patch file)."""
        info = await self.info(swarm, args.run)
        ws = self.steps.workspace_of(await self._fields(swarm, args.run))
        if ws is None or not info.branch or not info.commit:
            raise Conflict(
                f"run {args.run} has no result to apply"
                + ("" if ws else " (it did not work on a repository)")
                + f"; it is {info.status}",
                details={"run": args.run, "status": info.status},
            )
        space = self.steps.evidence.workspace(args.run, ws)
        repo = expand(args.repo) if args.repo else space.repo
        applied, file = await space.apply(args.how, info.commit, ws.base, args.file, repo)
        await emit(
            self.redis,
            self.keys,
            swarm,
            "loop.applied",
            {"run": args.run, "how": args.how, "commit": applied, "file": file},
        )
        return LoopApplyResult(
            run=args.run, how=args.how, branch=info.branch, commit=info.commit,
            applied=applied, file=file,
        )  # fmt: skip

    async def clean(self, swarm: str, run_id: str) -> LoopCleanResult:
        """``loop clean``: remove a finished run's worktrees and branches."""
        state = await self._load(swarm, run_id)
        if state.status not in loop.TERMINAL:
            raise Conflict(
                f"run {run_id} is {state.status}; cancel it before cleaning its workspaces",
                details={"run": run_id, "status": state.status},
            )
        ws = self.steps.workspace_of(await self._fields(swarm, run_id))
        if ws is None:
            return LoopCleanResult(run=run_id)
        worktrees, branches = await self.steps.evidence.workspace(run_id, ws).clean()
        return LoopCleanResult(run=run_id, worktrees=worktrees, branches=branches)

    async def exists(self, swarm: str, run_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.run(swarm, run_id)))

    async def info(self, swarm: str, run_id: str) -> RunInfo:
        state = await self._load(swarm, run_id)
        return run_info(swarm, state, await self._fields(swarm, run_id))

    async def all(self, swarm: str, status: str | None, limit: int) -> list[RunInfo]:
        ids = [r.decode() for r in await self.redis.zrevrange(self.keys.runs(swarm), 0, -1)]
        out = []
        for run_id in ids:
            info = await self.info(swarm, run_id)
            if status is None or info.status == status:
                out.append(info)
            if len(out) >= limit:
                break
        return out

    async def human(self, swarm: str, run_id: str, event: Any) -> RunInfo:
        state = await self.apply(swarm, run_id, event)
        if state.status == "cancelled":
            await self._cancel_tasks(swarm, run_id)
        elif state.status not in loop.TERMINAL:
            self._drive(swarm, run_id)
        return await self.info(swarm, run_id)

    async def _cancel_tasks(self, swarm: str, run_id: str) -> None:
        mine = [
            t async for t in self.swarms.tasks.index.live_ids(swarm) if t.startswith(f"{run_id}.")
        ]
        for task_id in mine:
            await self.swarms.tasks.cancel(swarm, task_id)

    async def follow(self, swarm: str, run_id: str) -> AsyncIterator[Event]:
        """The run's loop events so far, then live ones until it is at rest (finished, or
        escalated and waiting for a human)."""
        await self._load(swarm, run_id)
        started = int((await self._fields(swarm, run_id)).get("created_ms", "0"))
        past = await events.history(
            self.redis,
            self.keys,
            swarm,
            since_ms=max(0, started - 1),
            types=["loop"],
            limit=1_000_000,
        )
        last_id = None
        for ev in past:
            last_id = ev.id
            if ev.data.get("run") == run_id:
                yield ev
        if await self._at_rest(swarm, run_id):
            return
        async for ev in events.follow(
            self.redis,
            self.keys,
            self.hub,
            swarm,
            since_ms=max(0, started - 1),
            after_id=last_id,
            types=["loop"],
            stop=self._stop,
        ):
            if ev.data.get("run") != run_id:
                continue
            yield ev
            # An escalation may already have been answered (approve/extend): check now.
            if ev.type in ENDS_FOLLOW and await self._at_rest(swarm, run_id):
                return

    async def _at_rest(self, swarm: str, run_id: str) -> bool:
        status = (await self._load(swarm, run_id)).status
        return status in loop.TERMINAL or status == "escalated"

    # ------------------------------------------------------------------ driving

    async def _driver(self, swarm: str, run_id: str) -> None:
        try:
            await self._drive_until_done(swarm, run_id)
        finally:
            if not self._stop.is_set():
                self._forget(run_id)

    def _forget(self, run_id: str) -> None:
        """A finished (or gone) run's in-memory state goes with its driver; a later
        human step (approve, reject) makes what it needs again."""
        lock = self._locks.get(run_id)
        if lock is not None and not lock.locked():
            del self._locks[run_id]
        self._pulses.pop(run_id, None)
        self.steps.forget(run_id)

    async def _drive_until_done(self, swarm: str, run_id: str) -> None:
        done_pulse = self.hub.pulses(swarm).done
        while not self._stop.is_set():
            waiters = [done_pulse.current(), self._pulse(run_id).current()]
            try:
                state = await self._load(swarm, run_id)
                if state.status in loop.TERMINAL:
                    return
                if state.status != "escalated":
                    fields = await self._fields(swarm, run_id)
                    event = self._over_budget(state, fields)
                    if event is None:
                        await self.steps.realise(swarm, state, fields)
                        event = await self.steps.collect(swarm, state, fields)
                        if event is not None:
                            # collect recorded the costs of the results it read: money
                            # that ran out with them comes before what they decide, as
                            # when they arrive one pass at a time (a loaded cfnd reads
                            # several results in one pass).
                            fresh = await self._fields(swarm, run_id)
                            event = self._over_budget(state, fresh) or event
                    if event is not None:
                        await self.apply(swarm, run_id, event)
                        continue
            except Conflict as exc:
                log.warning("loop_event_refused", run=run_id, error=exc.message)
            except NotFound as exc:
                if await self._gone(swarm, run_id):
                    log.info("loop_driver_stopped", run=run_id, swarm=swarm, reason=exc.message)
                    return
                log.warning("loop_driver_waiting", run=run_id, error=exc.message)
            except Exception as exc:
                log.exception("loop_driver_failed", run=run_id, error=str(exc))
            await until_stopped(self._any(waiters), self._stop)

    async def _gone(self, swarm: str, run_id: str) -> bool:
        """The run, or its swarm, was deleted (``swarm reset`` / ``destroy``)."""
        if not await self.redis.exists(self.keys.run(swarm, run_id)):
            return True
        return swarm not in {s.id for s in await self.swarms.all()}

    @staticmethod
    def _over_budget(state: loop.RunState, fields: dict[str, Any]) -> Any:
        """``BudgetExhausted`` once the run spent its budget: nothing more is launched."""
        budget = state.budget_usd
        if budget is None:
            return None
        spent = spend(fields).usd
        return loop.BudgetExhausted(spent_usd=spent, budget_usd=budget) if spent >= budget else None

    @staticmethod
    async def _any(waiters: list[asyncio.Event]) -> None:
        tasks = [asyncio.ensure_future(w.wait()) for w in waiters]
        try:
            await asyncio.wait(tasks, timeout=RECHECK_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()


def new_run_id() -> str:
    return f"run-{uuid.uuid4().hex[:8]}"


def _sized(types: tuple[str, ...], count: int) -> list[str]:
    """The sized validator team, cut or cycled to ``count`` (0: as sized)."""
    if count <= 0:
        return list(types)
    return [types[i % len(types)] for i in range(count)]


def _limits(args: LoopStartArgs, cfg: LoopConfig, preset: ModePreset | None) -> loop.LoopLimits:
    """Explicit flags win over the mode preset, which wins over ``[loop]``."""
    gate = args.gate_threshold if args.gate_threshold is not None else None
    consensus_t = args.consensus_threshold
    try:
        return loop.LoopLimits(
            gate_threshold=gate if gate is not None else (
                preset.gate_threshold if preset else cfg.gate_threshold
            ),
            gate_mean=min(cfg.gate_mean, preset.gate_threshold) if preset else cfg.gate_mean,
            consensus_threshold=consensus_t if consensus_t is not None else (
                preset.consensus_threshold if preset else cfg.consensus_threshold
            ),
            # 0 is refused by LoopLimits (no round at all is not a loop), never defaulted.
            max_loop2=args.max_loop2 if args.max_loop2 is not None else cfg.max_loop2,
            max_loop3=args.max_loop3 if args.max_loop3 is not None else (
                preset.max_loop3 if preset else cfg.max_loop3
            ),
        )  # fmt: skip
    except ValueError as exc:
        raise InvalidArgs(str(exc)) from None
