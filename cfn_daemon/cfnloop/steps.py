"""What a run's persisted state asks for next: tasks to submit (``realise``) and the
event their stored results imply (``collect``).

Both are derived from the persisted state alone, so a restarted cfnd asks for the
same things: every implementer / check / validator / owner step is a task with a
deterministic id pinned to its agent, and submitting an id that exists is a no-op.
Each finished task's cost is recorded once in the run hash (``cost:<task>``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec

from cfn_client.wire.errors import Conflict
from cfn_client.wire.schema.swarm import TERMINAL_TASK_STATUSES, TaskInfo
from cfn_daemon.agent import types as agent_types
from cfn_daemon.cfnloop.evidence import Evidence, WorkspaceInfo
from cfn_daemon.cfnloop.rounds import Ballot, Rounds
from cfn_daemon.cfnloop.trusted import TrustedResults
from cfn_daemon.cfnloop.workspaces import CANDIDATE
from cfn_daemon.core import loop
from cfn_daemon.core.run_records import (
    Review,
    ballot_run,
    impl_task_id,
    implementer_prompt,
    owner_decision,
    owner_prompt,
    owner_task_id,
    val_task_id,
    validator_prompt,
)
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.swarm.keyring import KeyRing
from cfn_daemon.swarm.service import SwarmService
from cfn_daemon.util.text import without_nul

_json = msgspec.json.Encoder()


def phase_key(*parts: object) -> str:
    """The run-hash field holding when a Loop 3 iteration / Loop 4 decision began."""
    return "phase_started:" + ":".join(str(p) for p in parts)


class RunSteps:
    """Realises and collects the steps of CFN runs."""

    def __init__(self, swarms: SwarmService) -> None:
        self.swarms = swarms
        self.redis = swarms.redis
        self.keys = swarms.store.keys
        keyring = KeyRing(swarms.state_dir)
        self.rounds = Rounds(self.redis, self.keys, swarms.tasks, keyring)
        # Every result the loop acts on (implementers, checks, owner) is verified.
        self.trusted = TrustedResults(self.redis, self.keys, keyring)
        self.evidence = Evidence(
            self.redis, self.keys, swarms.tasks, swarms.state_dir, self.trusted.get_many
        )
        self._submitted: set[str] = set()
        self._costed: set[str] = set()

    def forget(self, run_id: str) -> None:
        """Drop what this process remembers of a finished run (bounded memory)."""
        prefix = f"{run_id}."
        self._submitted = {t for t in self._submitted if not t.startswith(prefix)}
        self._costed = {t for t in self._costed if not t.startswith(prefix)}
        self.rounds.forget(run_id)
        self.trusted.forget(run_id)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def workspace_of(fields: dict[str, Any]) -> WorkspaceInfo | None:
        raw = fields.get("workspace")
        return WorkspaceInfo.decode(raw) if raw else None

    async def _submitted_before(self, swarm: str, task_id: str) -> bool:
        if task_id in self._submitted:
            return True
        return bool(await self.swarms.tasks.get_many(swarm, [task_id]))

    async def submit(
        self,
        swarm: str,
        task_id: str,
        agent: str,
        text: str,
        context: dict[str, Any],
        *,
        bounded: bool = False,
    ) -> None:
        """Submit a task pinned to ``agent`` once (an existing id keeps its result).

        ``bounded``: a task whose type sets no time limit of its own (a check such as
        ``pytest``) gets ``loop.phase_timeout_s``, so a hung check cannot hang the run.
        """
        if task_id in self._submitted:
            return
        cfg = self.swarms.config()
        agent_type = (await self.swarms.registry.slot(swarm, agent)).type
        timeout_s = None
        if bounded and not agent_types.resolve(agent_type, cfg.agent_types).executor.timeout_s:
            timeout_s = cfg.loop.phase_timeout_s
        with contextlib.suppress(Conflict):
            await self.swarms.tasks.submit(
                swarm,
                text=without_nul(text),  # prompts quote agents' output, which may hold NUL
                type=agent_type,
                task_id=task_id,
                target=agent,
                context=context,
                max_attempts=cfg.tasks.max_attempts,
                timeout_s=timeout_s,
            )
        self._submitted.add(task_id)

    async def record_cost(self, swarm: str, run: str, rnd: int, task: TaskInfo) -> None:
        """Keep a finished task's reported spend (once; HSETNX makes replays harmless)."""
        if task.id in self._costed or task.status not in TERMINAL_TASK_STATUSES:
            return
        res = task.result
        record = {
            "usd": res.cost_usd if res else 0.0,
            "in": res.input_tokens if res else 0,
            "out": res.output_tokens if res else 0,
            "agent": task.target or task.agent or "?",
            "round": rnd,
        }
        await self.redis.hsetnx(self.keys.run(swarm, run), f"cost:{task.id}", _json.encode(record))
        self._costed.add(task.id)

    async def _resumable(self, swarm: str, run: str, agent: str) -> str | None:
        """The CLI session to resume for ``agent``, when its type resumes sessions."""
        session = await self.redis.hget(self.keys.run(swarm, run), f"session:{agent}")
        if not session:
            return None
        agent_type = (await self.swarms.registry.slot(swarm, agent)).type
        spec = agent_types.resolve(agent_type, self.swarms.config().agent_types)
        return session.decode() if spec.executor.resume else None

    # ------------------------------------------------------------------ realise

    async def realise(self, swarm: str, state: loop.RunState, fields: dict[str, Any]) -> None:
        ws = self.workspace_of(fields)
        if state.status == "loop3" and state.pending == ["candidate"]:
            if ws is not None:
                await self._realise_candidate(swarm, state, ws)
        elif state.status == "loop3":
            await self._realise_implementers(swarm, state, ws)
        elif state.status == "loop2":
            await self._realise_validators(swarm, state, ws)
        elif state.status == "loop4" and state.owner:
            await self._realise_owner(swarm, state, ws)

    async def _realise_implementers(
        self, swarm: str, state: loop.RunState, ws: WorkspaceInfo | None
    ) -> None:
        run, rnd, it = state.run_id, state.loop2_round, state.loop3_iteration
        # The phase's deadline counts from its first realisation (kept across restarts).
        await self.redis.hsetnx(self.keys.run(swarm, run), phase_key("loop3", rnd, it), now_ms())
        for agent in state.pending:
            tid = impl_task_id(run, rnd, it, agent)
            if await self._submitted_before(swarm, tid):
                self._submitted.add(tid)
                continue
            context: dict[str, Any] = {
                "kind": "implement",
                "run": run,
                "round": rnd,
                "iteration": it,
                "feedback": state.feedback,
            }
            session = await self._resumable(swarm, run, agent) if (rnd, it) != (1, 1) else None
            if session:
                context["resume_session"] = session
            if ws is not None:
                path, start = await self.evidence.prepare(swarm, state, ws, agent)
                context |= {"workspace": str(path), "base_ref": ws.base, "start": start}
            text = implementer_prompt(state, resumed=bool(session))
            await self.submit(swarm, tid, agent, text, context)

    async def _realise_candidate(self, swarm: str, state: loop.RunState, ws: WorkspaceInfo) -> None:
        built = await self.evidence.candidates(swarm, state, ws)
        if built["conflicts"] or not ws.checks or ws.checker is None:
            return
        for tid, cand, commit, cmd in self.evidence.check_ids(state, ws, built["heads"]):
            if tid in self._submitted:
                continue
            tree = await self.evidence.check_tree(state.run_id, ws, commit)
            context = {
                "kind": "check",
                "run": state.run_id,
                "round": state.loop2_round,
                "iteration": state.loop3_iteration,
                "candidate": cand,
                "workspace": str(tree),
                "base_ref": ws.base,
                "read_only": True,
            }
            await self.submit(swarm, tid, ws.checker, cmd, context, bounded=True)

    async def _reviews(
        self, swarm: str, state: loop.RunState, ws: WorkspaceInfo | None
    ) -> list[tuple[Review | None, str | None]]:
        if ws is None:
            return [(None, None)]
        limit = self.swarms.config().loop.max_diff_bytes
        return [
            (review, str(tree))
            for review, tree in await self.evidence.reviews(swarm, state, ws, limit)
        ]

    async def _realise_validators(
        self, swarm: str, state: loop.RunState, ws: WorkspaceInfo | None
    ) -> None:
        run, rnd = state.run_id, state.loop2_round
        # HSETNX alone keeps the first start time: no read needed before it.
        await self.redis.hsetnx(self.keys.run(swarm, run), f"round_started:{rnd}", now_ms())
        cands: list[str | None] = [None]
        if state.compete and ws is not None:
            cands = list(await self.evidence.passing_candidates(swarm, state)) or [None]
        ids = [val_task_id(run, rnd, a, c) for c in cands for a in state.validators]
        if all(tid in self._submitted for tid in ids):
            return  # the diff and review trees are built once per round
        for review, tree in await self._reviews(swarm, state, ws):
            cand = review.candidate if review else None
            for agent in state.validators:
                tid = val_task_id(run, rnd, agent, cand)
                if tid in self._submitted:
                    continue
                context: dict[str, Any] = {
                    "kind": "validate",
                    "run": ballot_run(run, cand),
                    "round": rnd,
                    "read_only": True,
                }
                if tree is not None and ws is not None:
                    context |= {"workspace": tree, "base_ref": ws.base}
                await self.submit(swarm, tid, agent, validator_prompt(state, review), context)

    async def _realise_owner(
        self, swarm: str, state: loop.RunState, ws: WorkspaceInfo | None
    ) -> None:
        assert state.owner is not None
        run, rnd = state.run_id, state.loop2_round
        tid = owner_task_id(run, rnd)
        if tid in self._submitted:
            return
        await self.redis.hsetnx(self.keys.run(swarm, run), phase_key("loop4", rnd), now_ms())
        summary = state.history[-1].outcome if state.history else ""
        context: dict[str, Any] = {"kind": "decide", "run": run, "round": rnd, "read_only": True}
        review = None
        if ws is not None:
            reviews = await self.evidence.reviews(
                swarm, state, ws, self.swarms.config().loop.max_diff_bytes
            )
            chosen = [r for r in reviews if (r[0].candidate or CANDIDATE) == (state.winner or "")]
            if chosen or reviews:
                review, tree = (chosen or reviews)[0]
                context |= {"workspace": str(tree), "base_ref": ws.base}
        await self.submit(swarm, tid, state.owner, owner_prompt(state, summary, review), context)

    # ------------------------------------------------------------------ collect

    async def collect(self, swarm: str, state: loop.RunState, fields: dict[str, Any]) -> Any:
        """The next event the stored task results imply, or None (keep waiting)."""
        ws = self.workspace_of(fields)
        run, rnd, it = state.run_id, state.loop2_round, state.loop3_iteration
        if state.status == "loop3" and state.pending == ["candidate"]:
            if ws is None:
                return None
            event = await self.evidence.collect_candidate(swarm, state, ws)
            await self._cost_checks(swarm, state, ws)
            if event is not None and event.ok and state.compete:
                await self.evidence.remember_passing(swarm, run, event.candidates)
            return event
        if state.status == "loop3":
            ids = [impl_task_id(run, rnd, it, a) for a in state.pending]
            tasks = await self.trusted.get_many(swarm, ids)
            for task in tasks:
                if task.status in TERMINAL_TASK_STATUSES:
                    await self.record_cost(swarm, run, rnd, task)
                    return await self._implementer_done(swarm, state, ws, task)
            late = await self._overdue(swarm, run, phase_key("loop3", rnd, it), tasks)
            if late is not None:
                task, why = late
                return loop.ImplementerDone(
                    agent=task.target or "", round=rnd, iteration=it, confidence=None, output="",
                    ok=False, reason=why,
                )  # fmt: skip
            return None
        if state.status == "loop2":
            return await self._close_round(swarm, state, ws)
        if state.status == "loop4" and state.owner:
            tasks = await self.trusted.get_many(swarm, [owner_task_id(run, rnd)])
            for task in tasks:
                if task.status in TERMINAL_TASK_STATUSES:
                    await self.record_cost(swarm, run, rnd, task)
                    return owner_decision(task)
            late = await self._overdue(swarm, run, phase_key("loop4", rnd), tasks)
            if late is not None:
                return loop.OwnerDecided(decision="ESCALATE", reason=late[1])
        return None

    async def _overdue(
        self, swarm: str, run: str, key: str, waiting: list[TaskInfo]
    ) -> tuple[TaskInfo, str] | None:
        """Past the phase's deadline: the first task still waited for (now cancelled), and
        why; None while there is time left."""
        started = await self.redis.hget(self.keys.run(swarm, run), key)
        limit_s = self.swarms.config().loop.phase_timeout_s
        if not started or not waiting or now_ms() - int(started) <= limit_s * 1000:
            return None
        task = waiting[0]
        where = f" (pinned to {task.target})" if task.target else ""
        why = (
            f"no result within loop.phase_timeout_s ({limit_s:g} s): task {task.id}{where} "
            f"was still {task.status}"
        )
        await self.swarms.tasks.cancel(swarm, task.id)
        return task, why

    async def _implementer_done(
        self, swarm: str, state: loop.RunState, ws: WorkspaceInfo | None, task: TaskInfo
    ) -> loop.ImplementerDone:
        res = task.result
        agent = task.target or ""
        if res is not None and res.session_id:
            await self.redis.hset(
                self.keys.run(swarm, state.run_id), f"session:{agent}", res.session_id
            )
        changed = None
        if ws is not None:
            changed = await self.evidence.finish_implementer(swarm, state, ws, task)
        return loop.ImplementerDone(
            agent=agent,
            round=state.loop2_round,
            iteration=state.loop3_iteration,
            confidence=res.confidence if res else None,
            output=res.output if res else "",
            ok=task.status == "succeeded",
            reason=task.error or (res.error if res else "") or "",
            changed_files=changed,
        )

    async def _cost_checks(self, swarm: str, state: loop.RunState, ws: WorkspaceInfo) -> None:
        built = await self.evidence.candidates(swarm, state, ws)
        ids = [c[0] for c in self.evidence.check_ids(state, ws, built["heads"])]
        for task in await self.swarms.tasks.get_many(swarm, ids):
            await self.record_cost(swarm, state.run_id, state.loop2_round, task)

    async def _close_round(
        self, swarm: str, state: loop.RunState, ws: WorkspaceInfo | None
    ) -> loop.ValidatorsClosed | None:
        run, rnd = state.run_id, state.loop2_round
        cands: list[str | None] = [None]
        if state.compete and ws is not None:
            cands = list(await self.evidence.passing_candidates(swarm, state)) or [None]
        ballots = [
            Ballot(c, [val_task_id(run, rnd, a, c) for a in state.validators]) for c in cands
        ]
        for task in await self.swarms.tasks.get_many(
            swarm, [t for b in ballots for t in b.task_ids]
        ):
            await self.record_cost(swarm, run, rnd, task)
        closed = await self.rounds.close(
            swarm,
            state,
            ballots,
            required=await self._required(swarm, state),
            timeout_s=self.swarms.config().loop.round_timeout_s,
        )
        if closed is not None and closed.passed and ws is not None:
            await self._remember_result(swarm, state, ws, closed.winner)
        return closed

    async def _required(self, swarm: str, state: loop.RunState) -> frozenset[str]:
        configured = self.swarms.config().agent_types
        out = set()
        for agent in state.validators:
            agent_type = (await self.swarms.registry.slot(swarm, agent)).type
            if agent_type in configured and configured[agent_type].required:
                out.add(agent)
        return frozenset(out)

    async def _remember_result(
        self, swarm: str, state: loop.RunState, ws: WorkspaceInfo, winner: str | None
    ) -> None:
        """The branch and commit that hold the result (the run reports them at the end)."""
        space = self.evidence.workspace(state.run_id, ws)
        name = winner or CANDIDATE
        commit = state.head
        if state.compete:  # the commit that was reviewed, not wherever the branch is now
            commit = (await self.evidence.passing_candidates(swarm, state)).get(name, commit)
        await self.redis.hset(
            self.keys.run(swarm, state.run_id),
            mapping={"result_branch": space.branch(name), "result_commit": commit or ""},
        )
