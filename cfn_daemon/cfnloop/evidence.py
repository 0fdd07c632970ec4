"""Evidence for the gate, and the change for the reviewers, in runs on a git repository.

Loop 3 of a workspace run, per iteration:

1. each implementer's worktree starts from the latest candidate (merge mode) or from
   its own branch (compete mode); the start commit is recorded once (``ws:start:*``);
2. when its task ends, cfn commits what it left and counts the files it changed;
3. once every implementer passed the confidence gate, the candidate is built: the
   branches merged into ``cfn/<run>/candidate`` (a conflict fails the gate, its hunks
   are the feedback), or in compete mode each branch is a candidate of its own;
4. every ``--check`` command runs as a task on the run's checker agent, in a read-only
   tree of each candidate; a failure's output tail is the feedback.

The merge result and the candidates of an iteration are stored in the run hash before
anything depends on them, so a restarted cfnd continues with the same ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import structlog

from cfn_client.wire.schema.swarm import TERMINAL_TASK_STATUSES, TaskInfo
from cfn_daemon.cfnloop.workspaces import CANDIDATE, RunWorkspace
from cfn_daemon.core import loop
from cfn_daemon.core.run_records import Review, check_task_id
from cfn_daemon.queue.tasks import TaskQueue
from cfn_daemon.store.keys import Keys

log = structlog.get_logger("cfn.loop")
TAIL_LINES = 40
TAIL_BYTES = 4000


@dataclass(frozen=True, slots=True)
class WorkspaceInfo:
    """What ``loop.start`` recorded about a run's repository (run hash ``workspace``)."""

    repo: str
    base: str  # the resolved base commit
    base_ref: str
    checks: list[str]
    checker: str | None

    @classmethod
    def decode(cls, raw: Any) -> WorkspaceInfo:
        d = msgspec.json.decode(raw)
        return cls(
            repo=d["repo"],
            base=d["base"],
            base_ref=d.get("base_ref", d["base"]),
            checks=list(d.get("checks", [])),
            checker=d.get("checker"),
        )

    def encode(self) -> bytes:
        return msgspec.json.encode(
            {
                "repo": self.repo,
                "base": self.base,
                "base_ref": self.base_ref,
                "checks": self.checks,
                "checker": self.checker,
            }
        )


def tail(text: str, lines: int = TAIL_LINES, limit: int = TAIL_BYTES) -> str:
    """The end of a command's output, as feedback."""
    out = "\n".join(text.rstrip().splitlines()[-lines:])
    return out[-limit:]


class Evidence:
    """The git and check steps of workspace runs, for ``LoopService``."""

    def __init__(
        self,
        redis: Any,
        keys: Keys,
        tasks: TaskQueue,
        state_dir: Path,
        trusted: Callable[[str, list[str]], Awaitable[list[TaskInfo]]] | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.tasks = tasks
        self.state_dir = state_dir
        # How checks' outcomes are read: verified results (``TrustedResults``).
        self._checked_tasks = trusted or tasks.get_many

    def workspace(self, run_id: str, ws: WorkspaceInfo) -> RunWorkspace:
        return RunWorkspace(Path(ws.repo), run_id, self.state_dir)

    async def _get(self, swarm: str, run: str, field: str) -> bytes | None:
        raw: bytes | None = await self.redis.hget(self.keys.run(swarm, run), field)
        return raw

    async def _set_once(self, swarm: str, run: str, field: str, value: bytes | str) -> bytes:
        """Keep the first value written (HSETNX) and return the one that is kept."""
        key = self.keys.run(swarm, run)
        # One round trip, and atomic: nobody can change the field between the two.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, field, value)
            pipe.hget(key, field)
            _, kept = await pipe.execute()
        return bytes(kept)

    # ------------------------------------------------------------------ implementers

    async def prepare(
        self, swarm: str, state: loop.RunState, ws: WorkspaceInfo, agent: str
    ) -> tuple[Path, str]:
        """The implementer's worktree for this iteration and the commit it starts from."""
        run, rnd, it = state.run_id, state.loop2_round, state.loop3_iteration
        field = f"ws:start:{rnd}:{it}:{agent}"
        space = self.workspace(run, ws)
        recorded = await self._get(swarm, run, field)
        if recorded is not None:
            # Resumed: the worktree may already hold this iteration's work; keep it.
            return space.path(agent), recorded.decode()
        start = ws.base
        if not state.compete:
            start = await space.candidate_head() or ws.base
        elif (own := await space.head_of(agent)) is not None:
            start = own
        head = await space.prepare(agent, start)
        kept = await self._set_once(swarm, run, field, head)
        return space.path(agent), kept.decode()

    async def finish_implementer(
        self, swarm: str, state: loop.RunState, ws: WorkspaceInfo, task: TaskInfo
    ) -> int:
        """Commit what the implementer left; how many files its branch changes from base.

        The whole branch counts, not just this iteration: after a merge an implementer
        whose share is already in the candidate has nothing left to do, and that is fine.
        """
        run, rnd, it = state.run_id, state.loop2_round, state.loop3_iteration
        agent = task.target or ""
        space = self.workspace(run, ws)
        output = task.result.output if task.result else ""
        first = next((line for line in output.splitlines() if line.strip()), "")
        message = (first.strip()[:200] or f"{agent}: round {rnd} iteration {it}") + (
            f"\n\ncfn run {run}, round {rnd}, iteration {it}, agent {agent}"
        )
        await space.commit(agent, message)
        head = await space.head_of(agent)
        if head is None:
            return 0
        return (await space.changes(ws.base, head)).files_changed

    # ------------------------------------------------------------------ candidates

    async def candidates(
        self, swarm: str, state: loop.RunState, ws: WorkspaceInfo
    ) -> dict[str, Any]:
        """This iteration's candidates (built once): ``{"conflicts": str, "heads": {...}}``.

        Merge mode: one candidate, ``candidate``, unless the merge conflicted. Compete
        mode: every implementer's branch head.
        """
        run, rnd, it = state.run_id, state.loop2_round, state.loop3_iteration
        field = f"ws:candidates:{rnd}:{it}"
        cached = await self._get(swarm, run, field)
        if cached is not None:
            out: dict[str, Any] = msgspec.json.decode(cached)
            return out
        space = self.workspace(run, ws)
        heads: dict[str, str] = {}
        conflicts = ""
        if state.compete:
            for agent in state.implementers:
                if (head := await space.head_of(agent)) is not None:
                    heads[agent] = head
        else:
            result = await space.merge(state.implementers, ws.base, f"round {rnd} iteration {it}")
            if result.ok:
                heads[CANDIDATE] = result.head
            else:
                conflicts = conflict_feedback(result.conflicts)
        record = {"conflicts": conflicts, "heads": heads}
        kept = await self._set_once(swarm, run, field, msgspec.json.encode(record))
        stored: dict[str, Any] = msgspec.json.decode(kept)
        return stored

    def check_ids(
        self, state: loop.RunState, ws: WorkspaceInfo, heads: dict[str, str]
    ) -> list[tuple[str, str, str, str]]:
        """(task id, candidate, commit, command) of every check of this iteration."""
        run, rnd, it = state.run_id, state.loop2_round, state.loop3_iteration
        out = []
        for cand, commit in heads.items():
            for n, cmd in enumerate(ws.checks, 1):
                tag = cand if state.compete else None
                out.append((check_task_id(run, rnd, it, n, tag), cand, commit, cmd))
        return out

    async def check_tree(self, run: str, ws: WorkspaceInfo, commit: str) -> Path:
        return await self.workspace(run, ws).tree(commit)

    async def collect_candidate(
        self, swarm: str, state: loop.RunState, ws: WorkspaceInfo
    ) -> loop.CandidateReady | None:
        """The candidate step's outcome once its checks ended, else None."""
        rnd, it = state.loop2_round, state.loop3_iteration
        built = await self.candidates(swarm, state, ws)
        heads: dict[str, str] = built["heads"]
        if built["conflicts"]:
            return loop.CandidateReady(
                ok=False, feedback=built["conflicts"], round=rnd, iteration=it
            )
        checks = self.check_ids(state, ws, heads)
        tasks = {t.id: t for t in await self._checked_tasks(swarm, [c[0] for c in checks])}
        if len(tasks) < len(checks) or any(
            t.status not in TERMINAL_TASK_STATUSES for t in tasks.values()
        ):
            return None
        failed: dict[str, list[str]] = {}
        space = self.workspace(state.run_id, ws)
        for tid, cand, _commit, cmd in checks:
            task = tasks[tid]
            res = task.result
            text = ((res.output if res else "") + "\n" + (res.stderr if res else "")).strip()
            name = f"r{rnd}-i{it}-{tid.rsplit('.', 1)[-1]}" + (f"-{cand}" if state.compete else "")
            path = await space.save_artifact(f"{name}.log", text.encode())
            await self.redis.hset(self.keys.run(swarm, state.run_id), f"artifact:{name}", str(path))
            if task.status != "succeeded":
                why = task.error or (res.error if res else "") or "failed"
                failed.setdefault(cand, []).append(
                    f"check `{cmd}` failed on {cand} ({why}); output tail:\n{tail(text)}"
                )
        passing = {c: h for c, h in heads.items() if c not in failed}
        feedback = "\n\n".join(line for lines in failed.values() for line in lines)
        if not passing:
            return loop.CandidateReady(ok=False, feedback=feedback, round=rnd, iteration=it)
        summary = await self._summary(swarm, state, ws, passing)
        head = passing.get(CANDIDATE) or next(iter(passing.values()))
        return loop.CandidateReady(
            ok=True,
            head=head,
            candidates=passing if state.compete else {},
            feedback=feedback,
            summary=summary,
            round=rnd,
            iteration=it,
        )

    async def _summary(
        self, swarm: str, state: loop.RunState, ws: WorkspaceInfo, heads: dict[str, str]
    ) -> str:
        space = self.workspace(state.run_id, ws)
        parts = []
        for cand, head in heads.items():
            info = await space.changes(ws.base, head)
            checks = f"; checks passed: {', '.join(ws.checks)}" if ws.checks else ""
            parts.append(
                f"Candidate {cand} ({space.branch(cand)} at {head[:12]}): "
                f"{info.files_changed} file(s) changed, +{info.insertions} -{info.deletions}"
                f"{checks}"
            )
        return "\n".join(parts)

    # ------------------------------------------------------------------ review

    async def reviews(
        self, swarm: str, state: loop.RunState, ws: WorkspaceInfo, max_patch_bytes: int
    ) -> list[tuple[Review, Path]]:
        """What the validators review in this round, each in a read-only tree."""
        run, rnd = state.run_id, state.loop2_round
        space = self.workspace(run, ws)
        if state.compete:
            built = await self.passing_candidates(swarm, state)
            heads = built or {}
        else:
            heads = {CANDIDATE: state.head or await space.candidate_head() or ws.base}
        out = []
        for cand, head in heads.items():
            info = await space.changes(ws.base, head, max_patch_bytes)
            name = f"r{rnd}-{cand}"
            patch = await space.save_artifact(f"{name}.patch", info.full_patch)
            await self.redis.hset(self.keys.run(swarm, run), f"artifact:{name}", str(patch))
            review = Review(
                candidate=cand if state.compete else None,
                branch=space.branch(cand),
                commit=head,
                stat=info.stat,
                patch=info.patch,
                truncated=info.truncated,
                patch_file=str(patch),
            )
            out.append((review, await space.tree(head)))
        return out

    async def passing_candidates(self, swarm: str, state: loop.RunState) -> dict[str, str]:
        """The passing candidates of the iteration that led to this Loop 2 round."""
        raw = await self.redis.hget(self.keys.run(swarm, state.run_id), "ws:passing")
        return dict(msgspec.json.decode(raw)) if raw else {}

    async def remember_passing(self, swarm: str, run: str, candidates: dict[str, str]) -> None:
        await self.redis.hset(
            self.keys.run(swarm, run), "ws:passing", msgspec.json.encode(candidates)
        )


def conflict_feedback(conflicts: list[Any]) -> str:
    """The merge conflicts, file by file with their hunks, for the implementers."""
    lines = ["The implementers' branches conflict; reconcile these changes:"]
    for c in conflicts:
        lines.append(f"\n### {c.path} ({c.kind}, from {c.source})")
        lines += [f"```\n{h.rstrip()}\n```" for h in c.hunks]
    return "\n".join(lines)
