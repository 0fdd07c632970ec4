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
import contextlib
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import structlog

from cfn_client.wire.errors import Conflict, InvalidArgs, NotFound
from cfn_client.wire.schema.loop import SIZING, LoopStartArgs, RunInfo
from cfn_client.wire.schema.swarm import TERMINAL_TASK_STATUSES, Event
from cfn_daemon.cfnloop.drivers import DriverPool
from cfn_daemon.core import consensus, loop
from cfn_daemon.core.placement import LIVE_STATUSES
from cfn_daemon.core.run_records import (
    impl_task_id,
    implementer_prompt,
    owner_decision,
    owner_prompt,
    owner_task_id,
    run_info,
    val_task_id,
    validator_prompt,
)
from cfn_daemon.queue import events
from cfn_daemon.queue.events import emit
from cfn_daemon.queue.notify import NotifyHub, Pulse
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.queue.votes import read_votes
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
        self._submitted: set[str] = set()
        self._votes_seen: set[tuple[str, int, str, str]] = set()
        self.drivers = DriverPool("run")

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
        for info in await self.swarms.all():
            for raw in await self.redis.zrange(self.keys.runs(info.id), 0, -1):
                run_id = raw.decode()
                if (await self._load(info.id, run_id)).status not in loop.TERMINAL:
                    self._drive(info.id, run_id)

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
            now = now_ms()
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
                await pipe.execute()
        await self._announce(swarm, state, new, event, effects)
        self._pulse(run_id).fire()
        return new

    async def _announce(
        self, swarm: str, old: loop.RunState, new: loop.RunState, event: Any, effects: list[Any]
    ) -> None:
        run = new.run_id
        out: list[tuple[str, dict[str, Any]]] = []
        if isinstance(event, loop.ImplementerDone):
            c = event.confidence
            valid = event.ok and c is not None and math.isfinite(c) and 0.0 <= c <= 1.0
            out.append(
                (
                    "loop.implementer_done",
                    {
                        "run": run,
                        "agent": event.agent,
                        "ok": event.ok,
                        "round": event.round,
                        "iteration": event.iteration,
                        "confidence": c if valid else 0.0,
                        "reason": event.reason,
                    },
                )
            )
        for h in new.history[len(old.history) :]:
            base = {"run": run, "round": h.round, "iteration": h.iteration}
            if h.kind == "loop3":
                out.append(
                    (
                        "loop.gate",
                        {
                            **base,
                            "passed": h.outcome == "gate-passed",
                            "mean": h.score,
                            "low": h.low,
                            "gate_threshold": new.limits.gate_threshold,
                            "gate_mean": new.limits.gate_mean,
                        },
                    )
                )
            elif h.kind == "loop4" and isinstance(event, loop.OwnerDecided):
                out.append(
                    (
                        "loop.owner",
                        {
                            **base,
                            "decision": event.decision,
                            "reason": event.reason,
                            "backlog": list(event.backlog),
                        },
                    )
                )
            elif h.kind == "human":
                out.append(("loop.human", {**base, "outcome": h.outcome}))
            # loop2 rounds are announced with their full consensus record by _close_round.
        for eff in effects:
            if isinstance(eff, loop.RunImplementers):
                out.append(
                    (
                        "loop.iteration",
                        {
                            "run": run,
                            "round": eff.round,
                            "iteration": eff.iteration,
                            "max_loop3": new.limits.max_loop3,
                            "agents": eff.agents,
                        },
                    )
                )
            elif isinstance(eff, loop.RunValidators):
                out.append(
                    ("loop.validating", {"run": run, "round": eff.round, "agents": new.validators})
                )
            elif isinstance(eff, loop.Escalate):
                out.append(("loop.escalated", {"run": run, "reason": eff.reason}))
            elif isinstance(eff, loop.Finished):
                out.append(
                    (
                        "loop.finished",
                        {
                            "run": run,
                            "status": eff.status,
                            "decision": eff.decision,
                            "reason": eff.reason,
                        },
                    )
                )
        for etype, data in out:
            await emit(self.redis, self.keys, swarm, etype, data)

    # ------------------------------------------------------------------ ops

    async def start(self, args: LoopStartArgs) -> RunInfo:
        swarm = await self.swarms.resolve(args.swarm)
        sized_impl, sized_val = SIZING[args.complexity or "medium"]
        impl_types = list(args.implementers) or list(sized_impl)
        val_types = list(args.validators) or list(sized_val)
        cfg = self.swarms.config().loop
        try:
            limits = loop.LoopLimits(
                gate_threshold=cfg.gate_threshold,
                gate_mean=cfg.gate_mean,
                consensus_threshold=cfg.consensus_threshold,
                max_loop2=args.max_loop2 or cfg.max_loop2,
                max_loop3=args.max_loop3 or cfg.max_loop3,
            )
        except ValueError as exc:
            raise InvalidArgs(str(exc)) from None
        taken: set[str] = set()
        implementers = await self._recruit(swarm, impl_types, "implementer", taken)
        validators = await self._recruit(swarm, val_types, "validator", taken)
        owner = (
            (await self._recruit(swarm, [args.owner], "owner", taken))[0] if args.owner else None
        )
        run_id = f"run-{uuid.uuid4().hex[:8]}"
        state = loop.RunState(
            run_id=run_id,
            task=args.task,
            implementers=implementers,
            validators=validators,
            owner=owner,
            phase=args.phase,
            limits=limits,
        )
        now = now_ms()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.keys.run(swarm, run_id),
                mapping={
                    "state": _json.encode(state),
                    "status": state.status,
                    "created_ms": now,
                    "updated_ms": now,
                },
            )
            pipe.zadd(self.keys.runs(swarm), {run_id: now})
            await pipe.execute()
        await emit(
            self.redis,
            self.keys,
            swarm,
            "loop.started",
            {
                "run": run_id,
                "task": args.task,
                "implementers": implementers,
                "validators": validators,
                "owner": owner,
            },
        )
        await self.apply(swarm, run_id, loop.Start())
        self._drive(swarm, run_id)
        return await self.info(swarm, run_id)

    async def _recruit(self, swarm: str, types: list[str], role: str, taken: set[str]) -> list[str]:
        """An agent per requested type: an idle one of the swarm, else a new one."""
        agents = [a for a in await self.swarms.registry.all(swarm) if a.status in LIVE_STATUSES]
        rt = await self.swarms.runtime(swarm)
        out = []
        for agent_type in types:
            free = [a for a in agents if a.type == agent_type and a.id not in taken]
            if free:
                chosen = free[0].id
            else:
                (chosen,) = await rt.supervisor.spawn(agent_type, role=role)
            taken.add(chosen)
            out.append(chosen)
        return out

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
        for task in await self.swarms.tasks.recent(swarm, limit=10_000):
            if task.id.startswith(f"{run_id}.") and task.status not in TERMINAL_TASK_STATUSES:
                await self.swarms.tasks.cancel(swarm, task.id)

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
        done_pulse = self.hub.pulses(swarm).done
        while not self._stop.is_set():
            waiters = [done_pulse.current(), self._pulse(run_id).current()]
            try:
                state = await self._load(swarm, run_id)
                if state.status in loop.TERMINAL:
                    return
                if state.status != "escalated":
                    await self._realise(swarm, state)
                    event = await self._collect(swarm, state)
                    if event is not None:
                        await self.apply(swarm, run_id, event)
                        continue
            except Conflict as exc:
                log.warning("loop_event_refused", run=run_id, error=exc.message)
            except Exception as exc:
                log.exception("loop_driver_failed", run=run_id, error=str(exc))
            await until_stopped(self._any(waiters), self._stop)

    @staticmethod
    async def _any(waiters: list[asyncio.Event]) -> None:
        tasks = [asyncio.ensure_future(w.wait()) for w in waiters]
        try:
            await asyncio.wait(tasks, timeout=RECHECK_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()

    async def _submit_pinned(
        self, swarm: str, task_id: str, agent: str, text: str, context: dict[str, Any]
    ) -> None:
        if task_id in self._submitted:
            return
        agent_type = (await self.swarms.registry.get(swarm, agent)).type
        # Submitted before a restart (Conflict): its stored result is used, not recomputed.
        with contextlib.suppress(Conflict):
            await self.swarms.tasks.submit(
                swarm,
                text=text,
                type=agent_type,
                task_id=task_id,
                target=agent,
                context=context,
                max_attempts=self.swarms.config().tasks.max_attempts,
            )
        self._submitted.add(task_id)

    async def _realise(self, swarm: str, state: loop.RunState) -> None:
        run, rnd = state.run_id, state.loop2_round
        if state.status == "loop3":
            for agent in state.pending:
                await self._submit_pinned(
                    swarm,
                    impl_task_id(run, rnd, state.loop3_iteration, agent),
                    agent,
                    implementer_prompt(state),
                    {
                        "kind": "implement",
                        "run": run,
                        "round": rnd,
                        "iteration": state.loop3_iteration,
                        "feedback": state.feedback,
                    },
                )
        elif state.status == "loop2":
            key = self.keys.run(swarm, run)
            # HSETNX alone keeps the first start time: no read needed before it.
            await self.redis.hsetnx(key, f"round_started:{rnd}", now_ms())
            for agent in state.validators:
                await self._submit_pinned(
                    swarm,
                    val_task_id(run, rnd, agent),
                    agent,
                    validator_prompt(state),
                    {"kind": "validate", "run": run, "round": rnd},
                )
        elif state.status == "loop4" and state.owner:
            summary = state.history[-1].outcome if state.history else ""
            await self._submit_pinned(
                swarm,
                owner_task_id(run, rnd),
                state.owner,
                owner_prompt(state, summary),
                {"kind": "decide", "run": run, "round": rnd},
            )

    async def _collect(self, swarm: str, state: loop.RunState) -> Any:
        """The next event the stored task results imply, or None (keep waiting)."""
        run, rnd, it = state.run_id, state.loop2_round, state.loop3_iteration
        queue = self.swarms.tasks
        if state.status == "loop3":
            ids = [impl_task_id(run, rnd, it, a) for a in state.pending]
            for task in await queue.get_many(swarm, ids):
                if task.status in TERMINAL_TASK_STATUSES:
                    res = task.result
                    return loop.ImplementerDone(
                        agent=task.target or "",
                        round=rnd,
                        iteration=it,
                        confidence=res.confidence if res else None,
                        output=res.output if res else "",
                        ok=task.status == "succeeded",
                        reason=task.error or (res.error if res else "") or "",
                    )
            return None
        if state.status == "loop2":
            return await self._close_round(swarm, state)
        if state.status == "loop4" and state.owner:
            for task in await queue.get_many(swarm, [owner_task_id(run, rnd)]):
                if task.status in TERMINAL_TASK_STATUSES:
                    return owner_decision(task)
        return None

    async def _earlier_issues(self, swarm: str, run: str, rnd: int) -> list[consensus.Issue]:
        fields = await self._fields(swarm, run)
        out: list[consensus.Issue] = []
        for key, raw in sorted(fields.items()):
            if key.startswith("round:") and int(key.split(":")[1]) < rnd:
                record = msgspec.json.decode(raw)
                out += msgspec.convert(record.get("feedback", []), list[consensus.Issue])
        return out

    async def _close_round(self, swarm: str, state: loop.RunState) -> Any:
        run, rnd = state.run_id, state.loop2_round
        ids = [val_task_id(run, rnd, a) for a in state.validators]
        tasks = await self.swarms.tasks.get_many(swarm, ids)
        finished = sum(1 for t in tasks if t.status in TERMINAL_TASK_STATUSES)
        tokens = await self.redis.hgetall(self.keys.tokens(swarm))
        received: list[tuple[consensus.Vote, bool]] = []
        for vote in await read_votes(self.redis, self.keys.votes(swarm, run, rnd)):
            token = tokens.get(vote.validator.encode(), b"")
            verified = bool(token) and consensus.verify_vote(token, run, rnd, vote)
            received.append((vote, verified))
            seen = (run, rnd, vote.validator, vote.signature)
            if seen not in self._votes_seen:
                self._votes_seen.add(seen)
                await emit(
                    self.redis,
                    self.keys,
                    swarm,
                    "loop.vote",
                    {
                        "run": run,
                        "round": rnd,
                        "validator": vote.validator,
                        "approve": vote.approve,
                        "confidence": vote.confidence,
                        "verified": verified,
                    },
                )
        started = await self.redis.hget(self.keys.run(swarm, run), f"round_started:{rnd}")
        timeout_ms = self.swarms.config().loop.round_timeout_s * 1000
        deadline = bool(started) and now_ms() - int(started) > timeout_ms
        # Every validator task ended: nothing more is coming from honest agents.
        all_done = finished == len(state.validators)
        outcome = consensus.close_round(
            state.validators,
            received,
            consensus.RoundConfig(threshold=state.limits.consensus_threshold),
            deadline_passed=deadline or all_done,
        )
        if outcome.status == "open":
            return None
        record = {"round": rnd, **msgspec.to_builtins(outcome)}
        await emit(
            self.redis,
            self.keys,
            swarm,
            "loop.round",
            {"run": run, "threshold": state.limits.consensus_threshold, **record},
        )
        await self.redis.hset(self.keys.run(swarm, run), f"round:{rnd:03d}", _json.encode(record))
        # Issues raised in earlier rounds stay listed (de-duplicated, highest severity
        # kept) until a round passes: implementers see everything still open.
        earlier = await self._earlier_issues(swarm, run, rnd)
        issues = consensus.aggregate_feedback([outcome.feedback], previous=earlier)
        feedback = consensus.render_feedback(issues, round_no=rnd)
        return loop.ValidatorsClosed(
            passed=outcome.status == "passed",
            score=outcome.score,
            no_quorum=outcome.status == "no_quorum",
            all_failed=not received,
            feedback=feedback,
            summary=outcome.reason,
            round=rnd,
        )
