"""Per-swarm supervision: local agent processes, lapsed agents, retry backoff.

- Local agents are ``cfn-agent`` children (own session, log in the state dir).
  One that exits unexpectedly is marked failed, its work is requeued, and a
  replacement is spawned (capped backoff; at most ``agents.max_restarts_per_minute``
  start in any minute, a budget that refills: ``core.restarts``).
- Any agent whose heartbeat lapses (local or remote) has its work reclaimed; a
  remote one is marked lost, a hung local one is killed and replaced. Lapses are
  judged only once Redis has been reachable for a whole lapse period, so agents
  that could not beat through an outage are not taken for dead.
- Local agents left running by a crashed cfnd are adopted on start (pidfd). The
  supervisor keeps a lease key alive; a local agent that sees no lease (and no
  parent cfnd) for ``agents.orphan_after_s`` exits by itself.
- Retries whose backoff ran out are moved back to their queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from cfn_client.wire.errors import Conflict, InvalidArgs
from cfn_daemon.agent import types as agent_types
from cfn_daemon.core.placement import LIVE_STATUSES, AgentRecord
from cfn_daemon.core.restarts import RestartBudget
from cfn_daemon.queue.agents import host_name, new_agent_id
from cfn_daemon.queue.events import emit
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.store.client import describe_error, is_unavailable_error
from cfn_daemon.swarm import retention
from cfn_daemon.swarm.agent_login import agent_login, agent_logout, agent_tls_args
from cfn_daemon.swarm.context import SwarmContext
from cfn_daemon.swarm.keyring import KeyRing, task_user
from cfn_daemon.util.aio import until_stopped

log = structlog.get_logger("cfn.supervisor")
# How long a spawned local agent may take to register before it counts as hung.
START_GRACE_MS = 30_000
CLEAN_EVERY_S = 300.0


@dataclass
class LocalAgent:
    """A cfn-agent process this daemon started (or adopted)."""

    id: str
    type: str
    role: str
    capabilities: list[str]
    pid: int
    slot: str = ""  # for a replacement: the slot (first agent id) it fills
    proc: asyncio.subprocess.Process | None = None
    stopping: bool = False
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    returncode: int | None = None
    reported: bool = False  # its death was logged (a retried report logs it once)


def agent_command() -> list[str]:
    exe = Path(sys.executable).parent / "cfn-agent"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cfn_daemon.agent.main"]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Supervisor:
    """Keeps one swarm's agents alive and its retries moving."""

    def __init__(self, ctx: SwarmContext, state_dir: Path) -> None:
        self.ctx = ctx
        self.swarm = ctx.swarm
        self.store = ctx.store
        self.tasks = ctx.tasks
        self.registry = ctx.registry
        self.config = ctx.config
        self.info = ctx.info
        self.log_dir = state_dir / "agents"
        self.local: dict[str, LocalAgent] = {}
        self._starts: collections.deque[float] = collections.deque()
        self._replacements: list[tuple[float, LocalAgent]] = []
        self._tg: asyncio.TaskGroup | None = None
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self.keeper = ctx.keeper
        self.keyring = KeyRing(state_dir)
        self._pin_tasks: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()
        self._spawn_lock = asyncio.Lock()

    # ------------------------------------------------------------------ loop

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            # After a restart of this loop (it crashed), keep watching what we had.
            for agent in list(self.local.values()):
                if agent.id not in self._watchers:
                    self._watch_in_group(agent)
            interval = self.config().agents.heartbeat_interval_s
            try:
                await self._renew_lease(interval)
                await self._adopt()
            except Exception as exc:
                if not is_unavailable_error(exc):
                    raise
            self.ready.set()
            next_clean = 0.0
            while await until_stopped(asyncio.sleep(interval), stop):
                try:
                    await self._renew_lease(interval)
                    now = asyncio.get_running_loop().time()
                    if now >= next_clean:  # retention: tasks, DLQ, dead agents
                        for gone in await retention.sweep(self.ctx, set(self.local)):
                            for path in (f"{gone}.log", f"{gone}.log.1"):
                                (self.log_dir / path).unlink(missing_ok=True)
                        # Check again after a tenth of the retention, at most every 5 min.
                        next_clean = now + min(CLEAN_EVERY_S, self.config().tasks.retention_s / 10)
                    await self.tasks.promote_due(self.swarm)
                    await self._check_lapsed()
                    await self._replace_due()
                except Exception as exc:
                    if not is_unavailable_error(exc):
                        log.exception("supervision_failed", swarm=self.swarm)
                    else:
                        # Heartbeats are judged only after Redis is back for a lapse.
                        self.store.report_failure(exc)
                        log.warning(
                            "supervision_store_unavailable",
                            swarm=self.swarm,
                            error=describe_error(exc),
                        )
            if self.config().agents.stop_with_daemon:
                await self.stop_all(self.config().agents.stop_grace_s + 2.0)
            # Agents left running (stop_with_daemon off) are adopted by the next cfnd.
            for agent in self.local.values():
                agent.stopping = True
            for watcher in self._watchers.values():
                watcher.cancel()
        self._tg = None

    # ------------------------------------------------------------------ spawning

    async def spawn(
        self,
        agent_type: str,
        *,
        role: str | None = None,
        capabilities: list[str] | None = None,
        count: int = 1,
    ) -> list[str]:
        """Start ``count`` local agents of ``agent_type``; returns their ids.

        The room check and the placeholder records are made under one lock, so
        concurrent spawns never take a swarm past ``max_agents``."""
        async with self._spawn_lock:
            return await self._spawn(agent_type, role, capabilities, count)

    async def ensure_one(self, agent_type: str) -> list[str]:
        """Spawn one agent of ``agent_type`` unless one is live or the swarm is full
        (checked and spawned under the spawn lock: concurrent callers spawn one)."""
        async with self._spawn_lock:
            swarm = self.info()
            live = [a for a in await self.registry.all(self.swarm) if a.status in LIVE_STATUSES]
            if swarm is None or swarm.status != "active" or len(live) >= swarm.max_agents:
                return []
            if any(a.type == agent_type for a in live):
                return []
            return await self._spawn(agent_type, None, None, 1)

    async def _spawn(
        self, agent_type: str, role: str | None, capabilities: list[str] | None, count: int
    ) -> list[str]:
        cfg = self.config()
        spec = agent_types.resolve(agent_type, cfg.agent_types)
        swarm = self.info()
        if swarm is None or swarm.status != "active":
            raise InvalidArgs(f"swarm {self.swarm} is not active; agents cannot join it")
        live = [a for a in await self.registry.all(self.swarm) if a.status in LIVE_STATUSES]
        if len(live) + count > swarm.max_agents:
            raise InvalidArgs(
                f"swarm {self.swarm} allows at most {swarm.max_agents} agents and has "
                f"{len(live)}; cannot add {count} (raise the limit with a new swarm, or "
                "terminate some)",
                details={"max_agents": swarm.max_agents, "agents": len(live)},
            )
        ids: list[str] = []
        for _ in range(count):
            agent = LocalAgent(
                id=new_agent_id(agent_type),
                type=agent_type,
                role=role or spec.role,
                capabilities=list(capabilities or spec.capabilities),
                pid=0,
            )
            try:
                await self._start(agent, spec)
            except Conflict:
                # Another cfnd (or a remote agent) took the last places meanwhile: the
                # registering script refused this one, so the cap holds.
                if not ids:
                    raise
                log.warning("agent_spawn_swarm_full", swarm=self.swarm, spawned=len(ids))
                break
            ids.append(agent.id)
        return ids

    async def _start(self, agent: LocalAgent, spec: agent_types.AgentTypeSpec) -> None:
        assert self._tg is not None, "supervisor is not running"
        cfg = self.config()
        # A placeholder record, so `agent list` and the max_agents count see it at once.
        await self.registry.register(
            AgentRecord(
                id=agent.id,
                swarm=self.swarm,
                type=agent.type,
                role=agent.role,  # type: ignore[arg-type]
                status="starting",
                capabilities=agent.capabilities,
                host=host_name(),
                local=True,
                started_ms=now_ms(),
                concurrency=spec.concurrency,
                slot=agent.slot,
            ),
            max_agents=cfg.limits.max_agents_per_swarm,
        )
        url, login_env = await agent_login(self.store, self.swarm, agent.id)
        argv = [
            *agent_command(),
            "--redis",
            url,
            "--swarm",
            self.swarm,
            "--type",
            agent.type,
            "--id",
            agent.id,
            "--role",
            agent.role,
            "--key-prefix",
            self.store.keys.prefix,
            "--heartbeat-s",
            str(cfg.agents.heartbeat_interval_s),
            "--grace-s",
            str(cfg.agents.stop_grace_s),
            "--orphan-after-s",
            str(cfg.agents.orphan_after_s),
            "--parent-pid",  # who supervises: our pid, not whoever the parent is by then
            str(os.getpid()),
            "--retry-base-s",
            str(cfg.tasks.retry_base_s),
            "--retry-max-s",
            str(cfg.tasks.retry_max_s),
            "--local",
            "--log-format",
            "json",
            "--log-file",
            str(self.log_dir / f"{agent.id}.log"),
            "--log-max-bytes",
            str(cfg.agents.log_max_bytes),
        ]
        for cap in agent.capabilities:
            argv += ["--capability", cap]
        argv += agent_tls_args(self.store)
        run_as = task_user(cfg.agents.run_as)
        if run_as:
            argv += ["--run-as", run_as]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CFN_", "NOTIFY_", "WATCHDOG_"))
        }
        env.update(login_env)
        # The agent makes its own signing key and hands us the public half on a pipe;
        # until it arrives no key can be pinned for this id from Redis.
        self.keyring.expect(self.swarm, agent.id)
        key_r, key_w = os.pipe()
        argv += ["--key-fd", str(key_w)]
        self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        log_fd = os.open(
            self.log_dir / f"{agent.id}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
        )
        try:
            agent.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                env=env,
                start_new_session=True,  # outlives a crashed cfnd; adopted by the next one
                pass_fds=(key_w,),
            )
        except BaseException:
            os.close(key_r)
            raise
        finally:
            os.close(log_fd)
            os.close(key_w)
        slots = [agent.id] + ([agent.slot] if agent.slot else [])
        # A replacement votes for its slot (the validator the run knows): the dead
        # agent's key is void, the slot's votes are verified with the new one.
        pin = asyncio.create_task(self.keyring.pin_from_pipe(key_r, self.swarm, slots))
        self._pin_tasks.add(pin)
        pin.add_done_callback(self._pin_tasks.discard)
        agent.pid = agent.proc.pid
        await self.registry.set_fields(self.swarm, agent.id, pid=agent.pid)
        self.local[agent.id] = agent
        self._watch_in_group(agent)
        await emit(
            self.store.redis,
            self.store.keys,
            self.swarm,
            "agent.spawned",
            {"agent": agent.id, "type": agent.type, "pid": agent.pid},
        )
        log.info("agent_spawned", swarm=self.swarm, agent=agent.id, pid=agent.pid)

    async def _adopt(self) -> None:
        """Take over local agents a previous cfnd left running."""
        me = host_name()
        for rec in await self.registry.all(self.swarm):
            if not rec.local or rec.host != me or rec.status not in LIVE_STATUSES or not rec.pid:
                continue
            if rec.id in self.local or "cfn" not in _cmdline(rec.pid):
                continue
            agent = LocalAgent(
                id=rec.id,
                type=rec.type,
                role=rec.role,
                capabilities=rec.capabilities,
                pid=rec.pid,
                slot=rec.slot,
            )
            self.local[agent.id] = agent
            self._watch_in_group(agent)
            log.info("agent_adopted", swarm=self.swarm, agent=agent.id, pid=agent.pid)
            if (state := self.keyring.lookup(self.swarm, agent.id)[0]) != "pinned":
                # Its key went down with the cfnd whose pipe it was on: nothing it signs can
                # verify. Stopped, it hands its work back and is replaced (with a new key).
                log.warning("agent_key_lost", swarm=self.swarm, agent=agent.id, key=state)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(agent.pid, signal.SIGTERM)

    async def _renew_lease(self, interval_s: float) -> None:
        """Tell this swarm's local agents a cfnd supervises them (see ``orphan_after_s``)."""
        ttl_ms = int(max(3 * interval_s, 5.0) * 1000)
        holder = f"{host_name()}:{os.getpid()}"  # who supervises; only the TTL changes
        await self.store.redis.set(self.store.keys.supervisor(self.swarm), holder, px=ttl_ms)

    def _watch_in_group(self, agent: LocalAgent) -> None:
        assert self._tg is not None
        task = self._tg.create_task(
            self.keeper.run(
                f"watch-{agent.id}",
                lambda: self._watch(agent),
                self._never,
                swarm=self.swarm,
                agent=agent.id,
            ),
            name=f"agent-{agent.id}",
        )
        self._watchers[agent.id] = task
        task.add_done_callback(lambda _: self._watchers.pop(agent.id, None))

    async def _watch(self, agent: LocalAgent) -> None:
        """Wait for the agent's exit, then report it. Run under the keeper: a store
        outage while reporting is waited out and the report repeated (it is idempotent)."""
        if not agent.exited.is_set():
            if agent.proc is not None:
                agent.returncode = await agent.proc.wait()
            else:
                agent.returncode = await self._wait_foreign(agent)
            agent.exited.set()
            await agent_logout(self.store, agent.id)  # its own ACL user, if it had one
        rc = agent.returncode
        if agent.stopping:
            self.local.pop(agent.id, None)
            log.info("agent_exited", swarm=self.swarm, agent=agent.id, code=rc)
            return
        if not agent.reported:
            log.error("agent_died", swarm=self.swarm, agent=agent.id, code=rc)
        agent.reported = True
        await self._lose(agent.id, "failed", f"process exited with {rc}")
        self.local.pop(agent.id, None)
        self._schedule_replacement(agent)

    async def _wait_foreign(self, agent: LocalAgent) -> int | None:
        """Wait for a process that is not our child (adopted) via pidfd."""
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(agent.pid)
        except ProcessLookupError:
            return None
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await done
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        return None

    # ------------------------------------------------------------------ failure handling

    async def _lose(self, agent_id: str, status: str, reason: str) -> None:
        """Stop scheduling to the agent, give its work back, tell everybody."""
        await self.registry.mark_gone(self.swarm, agent_id, status)
        requeued = await self.tasks.reclaim_agent(self.swarm, agent_id)
        await emit(
            self.store.redis,
            self.store.keys,
            self.swarm,
            f"agent.{status}",
            {"agent": agent_id, "reason": reason, "requeued": requeued},
        )
        log.warning(
            "agent_lost",
            swarm=self.swarm,
            agent=agent_id,
            status=status,
            reason=reason,
            requeued=requeued,
        )

    async def _check_lapsed(self) -> None:
        lapse_s = self.config().agents.lapse_s
        if self.store.available_for_s() < lapse_s:
            # Heartbeats could not reach Redis during the outage: not a lapse.
            return
        now = now_ms()
        cutoff = now - int(lapse_s * 1000)
        for agent_id in await self.registry.lapsed(self.swarm, cutoff):
            local = self.local.get(agent_id)
            if local is not None:
                if local.stopping:
                    continue
                rec = await self.registry.get(self.swarm, agent_id)
                if rec.status == "starting" and now - rec.started_ms < START_GRACE_MS:
                    # Not registered yet: Python start-up of several agents at once on a
                    # busy host can take longer than the heartbeat lapse.
                    continue
                # Alive but silent (hung): kill it; its watcher reclaims and replaces.
                log.error("agent_hung", swarm=self.swarm, agent=agent_id, pid=local.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(local.pid, signal.SIGKILL)
                continue
            rec = await self.registry.get(self.swarm, agent_id)
            if rec.status not in LIVE_STATUSES:
                continue
            await self._lose(agent_id, "failed" if rec.local else "lost", "heartbeat lapsed")
            if rec.local and rec.host == host_name():
                # A local agent that died while no cfnd watched it (not adopted): replace
                # it like any dead local agent, so the tasks pinned to its slot go on.
                self._schedule_replacement(
                    LocalAgent(
                        id=rec.id,
                        type=rec.type,
                        role=rec.role,
                        capabilities=rec.capabilities,
                        pid=rec.pid or 0,
                        slot=rec.slot,
                    )
                )

    def _budget(self) -> RestartBudget:
        cfg = self.config().agents
        return RestartBudget(
            cfg.max_restarts_per_minute,
            cfg.restart_backoff_s,
            cfg.restart_backoff_max_s,
            self._starts,
        )

    def _schedule_replacement(self, dead: LocalAgent) -> None:
        now = asyncio.get_running_loop().time()
        budget = self._budget()
        at = budget.next_start(now)
        if at is None:
            log.error("agent_not_replaced", swarm=self.swarm, agent=dead.id, per_minute=0)
            return
        if budget.waiting_for_window(now):
            log.warning(
                "agent_restart_limited",
                swarm=self.swarm,
                agent=dead.id,
                per_minute=budget.per_minute,
                in_s=round(at - now, 1),
            )
        self._replacements.append((at, dead))

    async def _replace_due(self) -> None:
        now = asyncio.get_running_loop().time()
        due = [d for t, d in self._replacements if t <= now]
        self._replacements = [(t, d) for t, d in self._replacements if t > now]
        for i, dead in enumerate(due):
            swarm = self.info()
            if swarm is None or swarm.status != "active":
                continue
            budget = self._budget()
            if not budget.take(now):
                self._schedule_replacement(dead)
                continue
            spec = agent_types.resolve(dead.type, self.config().agent_types)
            fresh = LocalAgent(
                id=new_agent_id(dead.type),
                type=dead.type,
                role=dead.role,
                capabilities=dead.capabilities,
                pid=0,
                slot=dead.slot or dead.id,  # its pinned tasks follow it to the replacement
            )
            try:
                async with self._spawn_lock:  # the room check and the spawn, as one step
                    live = [
                        a for a in await self.registry.all(self.swarm) if a.status in LIVE_STATUSES
                    ]
                    if len(live) >= swarm.max_agents:
                        log.warning(
                            "replacement_skipped_swarm_full", swarm=self.swarm, agent=dead.id,
                            max_agents=swarm.max_agents,
                        )  # fmt: skip
                        continue
                    await self._start(fresh, spec)
                await emit(
                    self.store.redis,
                    self.store.keys,
                    self.swarm,
                    "agent.replaced",
                    {"agent": dead.id, "replacement": fresh.id, "slot": fresh.slot},
                )
            except BaseException:
                # Not lost: the rest (and this one, unless it started) is tried again.
                if fresh.id not in self.local:
                    self._replacements.append((now, dead))
                self._replacements.extend((now, d) for d in due[i + 1 :])
                raise

    # ------------------------------------------------------------------ stopping

    async def request_stop(self, agent_id: str, *, force: bool) -> None:
        """Ask an agent to stop after its current work (``force``: SIGTERM it now)."""
        await self.registry.set_fields(self.swarm, agent_id, desired="stop")
        local = self.local.get(agent_id)
        if local is not None:
            local.stopping = True
            if force:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(local.pid, signal.SIGTERM)

    async def wait_stopped(self, timeout_s: float) -> None:
        """Wait (bounded) for every local agent to exit by itself."""
        waits = [asyncio.ensure_future(a.exited.wait()) for a in self.local.values()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout_s)
            for w in pending:
                w.cancel()

    async def stop_all(self, timeout_s: float) -> None:
        """SIGTERM every local agent (it hands back its work), SIGKILL after ``timeout_s``."""
        agents = list(self.local.values())
        for agent in agents:
            agent.stopping = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(agent.pid, signal.SIGTERM)
        await self.wait_stopped(timeout_s)
        for agent in agents:
            if not agent.exited.is_set():
                log.warning("agent_kill", swarm=self.swarm, agent=agent.id, pid=agent.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(agent.pid, signal.SIGKILL)

    _never = asyncio.Event()  # watchers end with their agent, not with a stop event

    def restart_view(self, agent_id: str) -> tuple[float | None, int]:
        """For ``agent.debug``: seconds until the dead ``agent_id``'s replacement is due
        (None: none pending) and the replacement starts spent in the current window."""
        now = asyncio.get_running_loop().time()
        due = [t - now for t, d in self._replacements if d.id == agent_id]
        return (max(0.0, min(due)) if due else None), self._budget().starts_in_window(now)
