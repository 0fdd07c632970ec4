"""``cfn-agent``: the one worker runtime, for local children of cfnd and remote hosts.

    cfn-agent --redis redis://host:6379/0 --swarm S --type T

It registers, heartbeats, reads its own work stream with XREADGROUP, runs each
task with its type's executor, and stores the result with one Lua call that also
acks the entry (so an entry is acked only after its result is stored). A slow
task is never taken away from a live agent: reclaiming is driven by missed
heartbeats, and the heartbeat loop keeps running while tasks run. SIGTERM stops
intake, lets running tasks finish within the grace period, then hands back what
is left (requeued for other agents) and exits 0 — within a bound even when Redis
is gone. The work and heartbeat loops restart by themselves when they fail
(``util.restart``). A local agent whose cfnd is gone and does not come back to
adopt it within ``orphan_after_s`` stops the same way.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog

from cfn_client.wire.errors import Conflict
from cfn_client.wire.schema.swarm import TaskInfo, TaskResult
from cfn_daemon.agent import types as agent_types
from cfn_daemon.agent.executors import ExecResult, TaskInput, run_task
from cfn_daemon.agent.intake import Intake
from cfn_daemon.core.consensus import vote_message
from cfn_daemon.core.placement import AgentRecord
from cfn_daemon.core.seals import result_message
from cfn_daemon.core.votes import vote_from_result
from cfn_daemon.queue import direct
from cfn_daemon.queue.agents import AgentRegistry
from cfn_daemon.queue.tasks import Retry, TaskQueue, now_ms
from cfn_daemon.queue.votes import submit_vote
from cfn_daemon.store.client import describe_error, is_outage, is_unavailable_error
from cfn_daemon.store.keys import Keys
from cfn_daemon.store.scripts import Scripts
from cfn_daemon.util.aio import until_stopped
from cfn_daemon.util.restart import Backoff, Fatal, Keeper
from cfn_daemon.util.signing import Signer

log = structlog.get_logger("cfn.agent")

HAND_BACK_TIMEOUT_S = 5.0  # a stopping agent gives up on a Redis that does not answer
COMPLETE_ATTEMPTS = 60  # ~ a few minutes of Redis outage before giving the task up


class AgentRuntime:
    """One agent: register, heartbeat, take work, run it, report it."""

    def __init__(
        self,
        redis: Any,
        keys: Keys,
        record: AgentRecord,
        spec: agent_types.AgentTypeSpec,
        *,
        heartbeat_interval_s: float = 1.0,
        stop_grace_s: float = 10.0,
        retry: Retry | None = None,
        orphan_after_s: float | None = None,
        parent_pid: int | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.record = record
        self.spec = spec
        self.scripts = Scripts(redis)
        self.tasks = TaskQueue(redis, keys, self.scripts)
        self.registry = AgentRegistry(redis, keys, self.scripts)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.stop_grace_s = stop_grace_s
        self.retry = retry or Retry()
        self.stop = asyncio.Event()
        self.registered = asyncio.Event()
        self._running: dict[str, asyncio.Event] = {}  # task id → cancel event
        # Signs this agent's validator votes (Ed25519, the private key only in this
        # process); cfnd pins the public key (handed over a pipe, or on first use).
        self.signer = signer or Signer()
        # This process: a task it starts is marked with it, so a restarted agent (same
        # id, new process) knows what its previous incarnation had started.
        self.incarnation = secrets.token_hex(8)
        record.incarnation = self.incarnation
        self._slots = asyncio.Semaphore(max(1, record.concurrency))
        self._free = max(1, record.concurrency)
        # Local agents only: how long we may go without a supervising cfnd.
        self.orphan_after_s = orphan_after_s if record.local else None
        # The cfnd that spawned us, as it said: our parent by the time we get here may
        # already be init (cfnd killed while we started), which must not count as one.
        self._parent = parent_pid if parent_pid is not None else os.getppid()
        self._supervised_at = time.monotonic()
        self.orphaned = False
        # A crashing loop is restarted with capped backoff; a remote agent keeps
        # retrying a Redis that is gone for as long as it runs, as a service should.
        self.keeper = Keeper(is_outage=is_outage, backoff=Backoff(base_s=0.5, max_s=30.0))

    @property
    def swarm(self) -> str:
        return self.record.swarm

    @property
    def id(self) -> str:
        return self.record.id

    async def run(self) -> None:
        """Serve until ``stop`` is set; then drain, hand back, deregister."""
        await self.keeper.run("register", self._register, self.stop, agent=self.id)
        runners: set[asyncio.Task[None]] = set()
        never = asyncio.Event()  # the heartbeat loop ends by itself once work is done
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                self.keeper.run("heartbeat", self._heartbeats, never, agent=self.id),
                name="heartbeat",
            )
            await self.keeper.run("work", lambda: self._work(tg, runners), self.stop, agent=self.id)
            # Stopping: let running tasks finish within the grace period.
            if runners:
                _, pending = await asyncio.wait(runners, timeout=self.stop_grace_s)
                if pending:
                    log.warning(
                        "agent_stop_grace_expired",
                        agent=self.id,
                        still_running=sorted(self._running),
                    )
                    for cancel in self._running.values():
                        cancel.set()
                    _, pending = await asyncio.wait(pending, timeout=self.stop_grace_s)
                for task in pending:
                    # Stuck storing a result in a Redis that is gone: SIGTERM must
                    # still stop us. The entry stays pending; cfnd reclaims it.
                    task.cancel()
        try:
            async with asyncio.timeout(HAND_BACK_TIMEOUT_S):
                await self._hand_back()
        except TimeoutError:
            log.error("agent_hand_back_timed_out", agent=self.id, after_s=HAND_BACK_TIMEOUT_S)

    async def _register(self) -> None:
        self.record.status = "idle"
        self.record.started_ms = self.record.started_ms or now_ms()
        await self.redis.hset(self.keys.tokens(self.swarm), self.id, self.signer.public)
        try:
            await self.registry.register(self.record)
        except Conflict as exc:  # the swarm is full: retrying does not make room
            raise Fatal(exc.message) from exc
        # Before the first read: with no group, XREADGROUP on the type's direct streams
        # fails (and one made from "0" also sees what was queued before we came).
        await direct.ensure_groups(self.redis, self.keys, self.swarm, self.record.type)
        self.registered.set()
        log.info("agent_registered", agent=self.id, swarm=self.swarm, type=self.record.type)

    async def _hand_back(self) -> None:
        try:
            requeued = await self.tasks.reclaim_agent(self.swarm, self.id)
            await self.registry.mark_gone(
                self.swarm, self.id, "stopped", {"agent": self.id, "requeued": requeued}
            )
        except Exception as exc:
            if not is_unavailable_error(exc):
                raise
            log.error("agent_hand_back_failed", agent=self.id, error=describe_error(exc))
            return
        log.info("agent_stopped", agent=self.id, handed_back=requeued)

    # ------------------------------------------------------------------ loops

    async def _heartbeats(self) -> None:
        # Heartbeats go on while stopping, until the last running task has finished:
        # a draining agent must not look dead and have its work taken away.
        while True:
            if self.stop.is_set():
                if not self._running:
                    return
                await asyncio.sleep(self.heartbeat_interval_s)
            else:
                await until_stopped(asyncio.sleep(self.heartbeat_interval_s), self.stop)
                if self.stop.is_set():
                    continue
            self._check_orphaned()
            current = next(iter(self._running), None)
            try:
                status, desired, cancelled, supervised = await self.registry.heartbeat(
                    self.swarm, self.id, current
                )
                if supervised:
                    self._supervised_at = time.monotonic()
                # The task may have finished while the heartbeat was in flight.
                cancel = self._running.get(current) if cancelled and current else None
                if cancel is not None:
                    cancel.set()
                if len(self._running) > 1:
                    await self._check_cancels()
            except Exception as exc:
                # A background loop logs and carries on: a missed beat is not fatal.
                if is_unavailable_error(exc):
                    log.warning("heartbeat_failed", agent=self.id, error=describe_error(exc))
                else:
                    log.exception("heartbeat_error", agent=self.id)
                continue
            if desired == "stop" and not self.stop.is_set():
                log.info("agent_stop_requested", agent=self.id)
                self.stop.set()
            if status in ("lost", "failed", "missing") and not self.stop.is_set():
                # cfnd gave our work to others while we were cut off: start afresh.
                log.warning("agent_was_reclaimed", agent=self.id, status=status)
                for cancel in self._running.values():
                    cancel.set()
                await self._register()

    def _check_orphaned(self) -> None:
        """Stop a local agent nobody supervises any more (its cfnd died for good)."""
        if self.orphan_after_s is None or self.stop.is_set():
            return
        now = time.monotonic()
        if os.getppid() == self._parent:
            self._supervised_at = now  # the cfnd that started us is alive
        alone_s = now - self._supervised_at
        if alone_s > self.orphan_after_s:
            log.warning(
                "agent_orphaned",
                agent=self.id,
                unsupervised_s=round(alone_s, 1),
                orphan_after_s=self.orphan_after_s,
            )
            self.orphaned = True
            self.stop.set()

    async def _check_cancels(self) -> None:
        ids = list(self._running)
        async with self.redis.pipeline(transaction=False) as pipe:
            for tid in ids:
                pipe.hget(self.keys.task(self.swarm, tid), "cancel")
            flags = await pipe.execute()
        for tid, flag in zip(ids, flags, strict=True):
            if flag in (b"1", "1") and tid in self._running:
                self._running[tid].set()

    async def _work(self, tg: asyncio.TaskGroup, runners: set[asyncio.Task[None]]) -> None:
        own = self.keys.work(self.swarm, self.id)
        intake = Intake(
            self.redis, self.id, [own, *direct.streams(self.keys, self.swarm, self.record.type)]
        )
        while not self.stop.is_set():
            if not await until_stopped(self._slots.acquire(), self.stop):
                return
            self._slots.release()
            try:
                entries = await intake.read(self._free)
            except Exception as exc:
                if not is_unavailable_error(exc) and "NOGROUP" not in str(exc):
                    raise
                log.warning("work_read_failed", agent=self.id, error=describe_error(exc))
                intake.rescan()
                if "NOGROUP" in str(exc):
                    await self._register()
                await until_stopped(asyncio.sleep(1.0), self.stop)
                continue
            for stream, eid, tid in entries:
                if tid in self._running:  # re-read while it runs here
                    continue
                await self._slots.acquire()
                self._free -= 1
                task = tg.create_task(self._run_one(eid, tid, stream), name=f"task-{tid}")
                runners.add(task)
                task.add_done_callback(runners.discard)

    async def _run_one(self, entry_id: str, task_id: str, stream: str) -> None:
        """One task; whatever goes wrong with it, the agent lives on and the task
        fails as a task (retried by its policy), rather than waiting forever in our
        work stream for a reclaim that never comes while we heartbeat."""
        try:
            await self._execute(entry_id, task_id, stream)
        except Exception as exc:
            log.exception("task_execute_failed", agent=self.id, task=task_id)
            failed = TaskResult(
                ok=False, agent=self.id, attempt=0, error=f"agent error: {describe_error(exc)}"
            )
            try:
                await self._complete(entry_id, task_id, failed, stream)
            except Exception:  # the entry stays pending; a reclaim retries it
                log.exception("task_fail_report_failed", agent=self.id, task=task_id)

    async def _execute(self, entry_id: str, task_id: str, stream: str) -> None:
        cancel = asyncio.Event()
        self._running[task_id] = cancel
        try:
            task = await self.tasks.start(
                self.swarm,
                task_id,
                self.id,
                incarnation=self.incarnation,
                entry_id=entry_id,
                stream=stream,
            )
            if isinstance(task, str):
                # Cancelled, finished elsewhere, or started by our previous incarnation
                # (reclaimed as agent-lost, never re-run here): start.lua acknowledged it.
                if task == "agent-lost":
                    log.warning("task_of_previous_incarnation", agent=self.id, task=task_id)
                return
            log.debug("task_started", agent=self.id, task=task_id, attempt=task.attempts)
            res = await self._run_guarded(task, cancel)
            result = to_result(res, self.id, task.attempts)
            if task.context.get("kind") == "validate":
                await self._vote(task.target or self.id, task.context, result)
            await self._complete(entry_id, task_id, result, stream)
        finally:
            self._running.pop(task_id, None)
            self._free += 1
            self._slots.release()

    async def _run_guarded(self, task: TaskInfo, cancel: asyncio.Event) -> ExecResult:
        """Run the task's executor; whatever the task holds, a bad task fails as a task
        and this agent lives on (poison text, a non-finite timeout, an executor bug)."""
        problem = poison_of(task, self.spec.executor.kind)
        if problem is not None:
            log.warning("task_refused", agent=self.id, task=task.id, reason=problem)
            return ExecResult(ok=False, error=problem)
        executor = self.spec.executor
        if task.timeout_s:
            executor = msgspec.structs.replace(executor, timeout_s=task.timeout_s)
        try:
            return await run_task(
                executor,
                TaskInput(
                    task_id=task.id,
                    swarm=self.swarm,
                    agent_id=self.id,
                    agent_type=self.record.type,
                    text=task.text,
                    attempt=task.attempts,
                    context=task.context,
                ),
                cancel=cancel,
            )
        except Exception as exc:
            # A bug in an executor: one traceback for this task, the agent carries on.
            log.exception("executor_failed", agent=self.id, task=task.id)
            return ExecResult(ok=False, error=f"the executor failed: {describe_error(exc)}")

    async def _vote(self, validator: str, context: dict[str, Any], result: TaskResult) -> None:
        """Sign the vote this validator task produced and submit it to the round.

        ``validator`` is the slot the task was pinned to (this agent's id, or the one
        of the dead agent it replaced): the run counts votes per slot.
        """
        run, round_no = str(context.get("run", "")), int(context.get("round", 0))
        vote = vote_from_result(validator, result, round_no)
        if vote is None:
            return
        result.signature = self.signer.sign(vote_message(run, round_no, vote))
        signed = msgspec.structs.replace(vote, signature=result.signature)
        key = self.keys.votes(self.swarm, run, round_no)
        # Across a store outage (a restarting Redis, a cfnd restart with its embedded
        # Redis): a re-sent identical vote is ignored by the count, so retrying is safe.
        sent = await self._through_outages(
            lambda: submit_vote(self.redis, key, signed), "vote_failed", run=run, round=round_no
        )
        if not sent:
            # The vote is also in the task's stored result: cfnd re-submits it from there.
            log.error("vote_lost", agent=self.id, run=run, round=round_no)

    async def _complete(self, entry_id: str, task_id: str, result: TaskResult, stream: str) -> None:
        outcome: list[str] = []

        def seal(stored: bytes) -> str:
            # Binds the exact stored bytes to this task, attempt and process (core.seals).
            return self.signer.sign(
                result_message(
                    self.swarm,
                    task_id,
                    result.attempt,
                    self.incarnation,
                    self.id,
                    result.ok,
                    stored,
                )
            )

        async def store() -> None:
            outcome.append(
                await self.tasks.complete(
                    self.swarm,
                    task_id,
                    self.id,
                    entry_id,
                    result,
                    self.retry,
                    seal=seal,
                    stream=stream,
                )
            )

        if not await self._through_outages(store, "complete_failed", task=task_id):
            # Still pending in our work stream: cfnd re-delivers it once our heartbeat lapses.
            log.error("task_result_lost", agent=self.id, task=task_id)
            return
        log.debug(  # per task: DEBUG, the events stream has them at INFO's level of detail
            "task_finished",
            agent=self.id,
            task=task_id,
            ok=result.ok,
            outcome=outcome[0],
            duration_ms=round(result.duration_ms, 1),
        )

    async def _through_outages(
        self, call: Callable[[], Awaitable[Any]], event: str, **context: Any
    ) -> bool:
        """``call()`` retried across store outages (backoff to 5 s, ``COMPLETE_ATTEMPTS``
        tries); False when Redis never came back. Other errors propagate."""
        delay = 0.1
        for attempt in range(1, COMPLETE_ATTEMPTS + 1):
            try:
                await call()
                return True
            except Exception as exc:
                if not is_unavailable_error(exc):
                    raise
                log.warning(
                    event, agent=self.id, attempt=attempt, error=describe_error(exc), **context
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        return False


def poison_of(task: TaskInfo, kind: str) -> str | None:
    """Why ``task`` cannot run at all (the wire refuses these; other writers may not).
    A prompt for an agent CLI shows NUL as a mark instead (``presets.safe_prompt``)."""
    if "\x00" in task.text and kind not in ("claude", "codex"):
        return "the task text contains a NUL byte, which no command or prompt can carry"
    if task.timeout_s is not None and not (math.isfinite(task.timeout_s) and task.timeout_s > 0):
        return f"timeout_s {task.timeout_s!r}: expected a finite positive number of seconds"
    return None


def to_result(res: ExecResult, agent: str, attempt: int) -> TaskResult:
    return TaskResult(
        ok=res.ok,
        agent=agent,
        attempt=attempt,
        exit_code=res.exit_code,
        output=res.output,
        stderr=res.stderr,
        truncated=res.truncated,
        confidence=res.confidence,
        vote=res.vote,
        feedback=res.feedback,
        error=res.error,
        duration_ms=res.duration_ms,
        session_id=res.session_id,
        cost_usd=res.cost_usd,
        input_tokens=res.input_tokens,
        output_tokens=res.output_tokens,
        num_turns=res.num_turns,
    )
