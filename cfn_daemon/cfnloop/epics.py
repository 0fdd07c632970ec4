"""Epics (Loop 1): each phase is a CFN run, started in dependency order.

An epic is the hash ``epic:{id}`` (its spec and ``phase:<name>`` → run id) in the
swarm's keyspace; a phase's status is its run's status, so a restarted cfnd knows
exactly which phases ran, run or wait, and carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import msgspec
import structlog

from cfn_client.wire.errors import CfnError, Conflict, NotFound
from cfn_client.wire.schema.loop import LoopStartArgs, RunInfo
from cfn_client.wire.schema.swarm import TERMINAL_TASK_STATUSES
from cfn_client.wire.schema.workflow import (
    EpicInfo,
    EpicSpec,
    EpicStartArgs,
    PhaseInfo,
    PhaseSpec,
)
from cfn_daemon.cfnloop import retention
from cfn_daemon.cfnloop.drivers import DriverPool
from cfn_daemon.cfnloop.runner import LoopService, new_run_id
from cfn_daemon.core import workflow
from cfn_daemon.core.run_records import spend
from cfn_daemon.queue.events import emit
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.util.aio import until_stopped

log = structlog.get_logger("cfn.epic")
RECHECK_S = 2.0
RUN_TO_PHASE = {
    "done": "done",
    "escalated": "escalated",
    "failed": "failed",
    "cancelled": "cancelled",
}


class EpicService:
    """Starts epics and drives their phases through CFN runs."""

    def __init__(self, loops: LoopService) -> None:
        self.loops = loops
        self.swarms = loops.swarms
        self.keys = loops.keys
        self.drivers = DriverPool("epic", loops.swarms.keeper)

    @property
    def redis(self) -> Any:
        return self.swarms.redis

    @property
    def _stop(self) -> asyncio.Event:
        return self.drivers.stop

    async def run(self, stop: asyncio.Event) -> None:
        """Resume every unfinished epic (after the runs), then drive epics until ``stop``."""
        await self.drivers.run(stop, self.loops.ready, self._resume)

    async def _resume(self) -> None:
        self.drivers.start("epic-retention", self._retention)
        for info in await self.swarms.all():
            for raw in await self.redis.zrange(self.keys.epics(info.id), 0, -1):
                async with self.drivers.skip_broken("epic", raw.decode()):
                    epic = await self.info(info.id, raw.decode())
                    if epic.status not in ("done", "failed"):
                        self._drive(info.id, epic.id)

    async def _retention(self) -> None:
        """Finished epics, with their runs, go ``loop.run_retention_s`` after they ended."""
        while not self._stop.is_set():
            retention_s = self.swarms.config().loop.run_retention_s
            try:
                cutoff = now_ms() - int(retention_s * 1000)
                for swarm in await self.swarms.all():
                    await self._expire(swarm.id, cutoff)
            except Exception as exc:
                log.exception("epic_retention_failed", error=str(exc))
            await until_stopped(asyncio.sleep(min(max(retention_s / 4, 0.2), 3600.0)), self._stop)

    async def _expire(self, swarm: str, cutoff_ms: int) -> None:
        raw = await self.redis.zrangebyscore(
            self.keys.epics(swarm), "-inf", cutoff_ms, start=0, num=retention.BATCH
        )
        for epic_id in (r.decode() for r in raw):
            try:
                epic = await self.info(swarm, epic_id)
            except NotFound:
                await self.redis.zrem(self.keys.epics(swarm), epic_id)
                continue
            if epic.status not in ("done", "failed"):
                continue
            runs = [p.run for p in epic.phases if p.run]
            await retention.expire_epic(self.redis, self.keys, swarm, epic_id, runs, cutoff_ms)

    def _drive(self, swarm: str, epic_id: str) -> None:
        self.drivers.start(epic_id, lambda: self._driver(swarm, epic_id))

    async def start(self, args: EpicStartArgs) -> EpicInfo:
        swarm = await self.swarms.resolve(args.swarm)
        workflow.validate(args.epic)
        epic_id = f"epic-{uuid.uuid4().hex[:8]}"
        now = now_ms()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.keys.epic(swarm, epic_id),
                mapping={"spec": msgspec.json.encode(args.epic), "created_ms": now},
            )
            pipe.zadd(self.keys.epics(swarm), {epic_id: now})
            await pipe.execute()
        await emit(
            self.redis,
            self.keys,
            swarm,
            "epic.started",
            {"epic": epic_id, "name": args.epic.name, "phases": [p.name for p in args.epic.phases]},
        )
        self._drive(swarm, epic_id)
        return await self.info(swarm, epic_id)

    async def _load(
        self, swarm: str, epic_id: str
    ) -> tuple[EpicSpec, dict[str, str], dict[str, str], int]:
        raw = await self.redis.hgetall(self.keys.epic(swarm, epic_id))
        if not raw:
            raise NotFound(f"no epic {epic_id!r} in swarm {swarm}")
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        spec = msgspec.json.decode(fields["spec"], type=EpicSpec)
        runs = {k.removeprefix("phase:"): v for k, v in fields.items() if k.startswith("phase:")}
        checks = {k.removeprefix("check:"): v for k, v in fields.items() if k.startswith("check:")}
        return spec, runs, checks, int(fields.get("created_ms", "0"))

    async def _blocked(self, swarm: str, epic_id: str) -> dict[str, tuple[str, int, bool]]:
        """Phases that cannot start: name → (reason, since ms, escalated)."""
        raw = await self.redis.hgetall(self.keys.epic(swarm, epic_id))
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        out = {}
        for key, reason in fields.items():
            if key.startswith("blocked:"):
                name = key.removeprefix("blocked:")
                since = int(fields.get(f"blocked_since:{name}", "0"))
                out[name] = (reason, since, f"escalated:{name}" in fields)
        return out

    async def _statuses(
        self,
        swarm: str,
        epic_id: str,
        spec: EpicSpec,
        runs: dict[str, str],
        checks: dict[str, str],
    ) -> dict[str, tuple[str, Any]]:
        """Each started phase's status (one whose run exists): its run's, held at
        ``checking`` until a sprint checkpoint passed (a failed checkpoint fails the phase)."""
        by_name = {p.name: p for p in spec.phases}
        out: dict[str, tuple[str, Any]] = {}
        for phase, run_id in runs.items():
            try:
                run = await self.loops.info(swarm, run_id)
            except NotFound:  # reserved, not started yet: see ``_flat``
                continue
            status = RUN_TO_PHASE.get(run.status, "running")
            p = by_name[phase]
            if status == "done" and (p.checks or p.min_confidence is not None):
                verdict = checks.get(phase)
                status = (
                    "checking" if verdict is None else "done" if verdict == "passed" else "failed"
                )
            out[phase] = (status, run.decision)
        return out

    @staticmethod
    def _flat(
        statuses: dict[str, tuple[str, Any]],
        runs: dict[str, str],
        blocked: dict[str, tuple[str, int, bool]],
    ) -> dict[str, str]:
        """Each phase's status. A phase whose run id is reserved but whose run does not
        exist is ``running`` (its start is retried, once, by that id) unless its start
        failed: then it is ``escalated`` past the bound, else waiting (absent)."""
        flat = {k: v[0] for k, v in statuses.items()}
        for name in runs.keys() - statuses.keys():
            if name not in blocked:
                flat[name] = "running"
            elif blocked[name][2]:
                flat[name] = "escalated"
        return flat

    async def _run_cost(self, swarm: str, run_id: str) -> float:
        raw = await self.redis.hgetall(self.keys.run(swarm, run_id))
        return spend({k.decode(): v for k, v in raw.items()}).usd

    async def info(self, swarm: str, epic_id: str) -> EpicInfo:
        spec, runs, checks, created = await self._load(swarm, epic_id)
        statuses = await self._statuses(swarm, epic_id, spec, runs, checks)
        blocked = await self._blocked(swarm, epic_id)
        flat = self._flat(statuses, runs, blocked)
        # A phase that could not start has no run yet (only its reserved id).
        reasons = {name: why for name, (why, _, _) in blocked.items() if name not in statuses}
        runs = {name: run for name, run in runs.items() if name not in reasons}
        costs = {name: await self._run_cost(swarm, run) for name, run in runs.items()}
        return EpicInfo(
            reason=next((reasons[p.name] for p in spec.phases if p.name in reasons), None),
            cost_usd=round(sum(costs.values()), 6),
            id=epic_id,
            swarm=swarm,
            name=spec.name,
            status=workflow.epic_status(spec, flat),
            order=workflow.layers(
                {p.name: p.depends_on for p in spec.phases}, [p.name for p in spec.phases]
            ),
            phases=[
                PhaseInfo(
                    name=p.name,
                    status=flat.get(p.name, "waiting"),
                    run=runs.get(p.name),
                    depends_on=list(p.depends_on),
                    decision=statuses.get(p.name, ("", None))[1],
                    checkpoint=checks.get(p.name),
                    cost_usd=costs.get(p.name, 0.0),
                    reason=reasons.get(p.name),
                )
                for p in spec.phases
            ],
            created_ms=created,
        )

    async def all(self, swarm: str) -> list[EpicInfo]:
        ids = [r.decode() for r in await self.redis.zrevrange(self.keys.epics(swarm), 0, -1)]
        return [await self.info(swarm, i) for i in ids]

    async def _driver(self, swarm: str, epic_id: str) -> None:
        pulse = self.loops.hub.pulses(swarm).events
        while not self._stop.is_set():
            waiter = pulse.current()
            try:
                if await self._advance(swarm, epic_id):
                    return
            except NotFound as exc:
                if not await self.redis.exists(self.keys.epic(swarm, epic_id)):
                    log.info("epic_driver_stopped", epic=epic_id, swarm=swarm, reason=exc.message)
                    return
                log.warning("epic_driver_waiting", epic=epic_id, error=exc.message)
            except Exception as exc:
                log.exception("epic_driver_failed", epic=epic_id, error=str(exc))
            await until_stopped(asyncio.wait_for(waiter.wait(), RECHECK_S), self._stop)

    async def _advance(self, swarm: str, epic_id: str) -> bool:
        """Start what may start; True once the epic is over."""
        spec, runs, checks, _ = await self._load(swarm, epic_id)
        statuses = await self._statuses(swarm, epic_id, spec, runs, checks)
        flat = self._flat(statuses, runs, await self._blocked(swarm, epic_id))
        for name in [n for n, st in flat.items() if st == "checking"]:
            verdict = await self._checkpoint(swarm, epic_id, spec, name, runs[name])
            if verdict is not None:
                await self.redis.hsetnx(self.keys.epic(swarm, epic_id), f"check:{name}", verdict)
                await emit(
                    self.redis,
                    self.keys,
                    swarm,
                    "epic.checkpoint",
                    {"epic": epic_id, "phase": name, "verdict": verdict},
                )
                flat[name] = "done" if verdict == "passed" else "failed"
        status = workflow.epic_status(spec, flat)
        if status in ("done", "failed"):
            await emit(
                self.redis, self.keys, swarm, "epic.finished", {"epic": epic_id, "status": status}
            )
            return True
        by_name = {p.name: p for p in spec.phases}
        key = self.keys.epic(swarm, epic_id)
        # A phase's run id is reserved (HSETNX) before the run starts, and the run is
        # started by that id: a crash in between starts it on the next pass, once.
        todo = [(n, r) for n, r in runs.items() if not await self.loops.exists(swarm, r)]
        for name in workflow.next_to_start(spec, flat):
            run_id = new_run_id()
            if await self.redis.hsetnx(key, f"phase:{name}", run_id):
                todo.append((name, run_id))
        for name, run_id in todo:
            phase = by_name[name]
            try:
                run = await self._start_phase(swarm, spec, phase, run_id, epic_id)
            except CfnError as exc:
                await self._cannot_start(swarm, epic_id, name, exc.message)
                continue
            await self.redis.hdel(
                self.keys.epic(swarm, epic_id),
                f"blocked:{name}", f"blocked_since:{name}", f"escalated:{name}",
            )  # fmt: skip
            await emit(
                self.redis,
                self.keys,
                swarm,
                "epic.phase_started",
                {"epic": epic_id, "phase": name, "run": run.id},
            )
        return False

    async def _cannot_start(self, swarm: str, epic_id: str, phase: str, reason: str) -> None:
        """Say why ``phase`` cannot start (once per reason); escalate after the bound."""
        key = self.keys.epic(swarm, epic_id)
        now = now_ms()
        await self.redis.hsetnx(key, f"blocked_since:{phase}", now)
        previous, since, escalated = await self.redis.hmget(
            key, f"blocked:{phase}", f"blocked_since:{phase}", f"escalated:{phase}"
        )
        if previous is None or previous.decode() != reason:
            await self.redis.hset(key, f"blocked:{phase}", reason)
            log.warning("epic_phase_cannot_start", epic=epic_id, phase=phase, reason=reason)
            await emit(
                self.redis,
                self.keys,
                swarm,
                "epic.blocked",
                {"epic": epic_id, "phase": phase, "reason": reason},
            )
        limit_s = self.swarms.config().loop.recruit_timeout_s
        overdue = escalated is None and now - int(since or now) > limit_s * 1000
        # HSETNX: announced once, even with two drivers racing after a restart.
        if overdue and await self.redis.hsetnx(key, f"escalated:{phase}", now):
            await emit(
                self.redis,
                self.keys,
                swarm,
                "epic.escalated",
                {"epic": epic_id, "phase": phase, "reason": reason, "after_s": limit_s},
            )

    async def _start_phase(
        self, swarm: str, spec: EpicSpec, phase: PhaseSpec, run_id: str, epic_id: str
    ) -> RunInfo:
        """Start ``phase``'s run under the id reserved for it (see ``_advance``)."""
        return await self.loops.start(
            LoopStartArgs(
                swarm=swarm,
                task=f"{spec.name}: {phase.name}\n{phase.description}".strip(),
                phase=phase.name,
                implementers=phase.implementers,
                validators=phase.validators,
                owner=phase.owner,
                complexity=phase.complexity,
                max_loop2=phase.max_loop2,
                max_loop3=phase.max_loop3,
                mode=phase.mode,
                repo=phase.repo or spec.repo,
                base=phase.base or spec.base,
                checks=list(phase.checks) if (phase.repo or spec.repo) else [],
                budget_usd=phase.budget_usd,
            ),
            run_id=run_id,
            epic=epic_id,
        )

    async def _checkpoint(
        self, swarm: str, epic_id: str, spec: EpicSpec, phase: str, run_id: str
    ) -> str | None:
        """A sprint checkpoint's verdict, or None while its checks still run."""
        p = next(x for x in spec.phases if x.name == phase)
        if p.min_confidence is not None:
            run = await self.loops.info(swarm, run_id)
            gates = [h for h in run.history if h.get("kind") == "loop3"]
            mean = gates[-1].get("score") if gates else None
            if mean is None or mean < p.min_confidence:
                return f"failed: confidence {mean} below the checkpoint's {p.min_confidence}"
        tasks = self.swarms.tasks
        ids = [f"{epic_id}.{phase}.check{i}" for i in range(len(p.checks))]
        for task_id, command in zip(ids, p.checks, strict=True):
            with contextlib.suppress(Conflict):  # submitted before a restart
                await tasks.submit(
                    swarm, text=command, type="shell", task_id=task_id, max_attempts=1
                )
        results = await tasks.get_many(swarm, ids)
        if any(t.status not in TERMINAL_TASK_STATUSES for t in results):
            await self._ensure_shell(swarm)
            return None
        failed = [f"`{t.text}` ({t.error or t.status})" for t in results if t.status != "succeeded"]
        return "passed" if not failed else "failed: " + "; ".join(failed)

    async def _ensure_shell(self, swarm: str) -> None:
        agents = await self.swarms.registry.all(swarm)
        if not any(a.type == "shell" and a.status in ("starting", "idle", "busy") for a in agents):
            rt = await self.swarms.runtime(swarm)
            await rt.supervisor.spawn("shell")
