"""Swarms: records in Redis plus one runtime (dispatcher + supervisor) per active swarm.

A swarm's state is the hash ``cfn:{s}:state`` and membership of ``cfn:swarms``;
everything else of the swarm shares its hash tag. On start cfnd reads every
swarm back from Redis and resumes its runtime, so a restarted daemon carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import structlog

from cfn_client.wire.errors import Conflict, InvalidArgs, NotFound, StoreDenied
from cfn_client.wire.schema.swarm import (
    DEFAULT_TEST_TTL_S,
    MAX_AGENTS,
    MAX_TEST_TTL_S,
    MIN_AGENTS,
    AgentInfo,
    SwarmInfo,
    SwarmInitArgs,
    SwarmScaleResult,
    SwarmStatusResult,
)
from cfn_daemon.agent import types as agent_types
from cfn_daemon.core.placement import LIVE_STATUSES, PRIORITIES
from cfn_daemon.queue.agents import AgentRegistry
from cfn_daemon.queue.events import emit
from cfn_daemon.queue.notify import NotifyHub
from cfn_daemon.queue.tasks import TaskQueue, now_ms
from cfn_daemon.settings.runtime import ConfigManager
from cfn_daemon.settings.schema import Config
from cfn_daemon.store import Store
from cfn_daemon.store.client import describe_error, is_outage
from cfn_daemon.store.keys import TASK_INDEX_FIELD, TASK_INDEX_VERSION
from cfn_daemon.store.scripts import Scripts
from cfn_daemon.swarm import ephemeral
from cfn_daemon.swarm.context import LlmSlots, SwarmContext
from cfn_daemon.swarm.dispatcher import Dispatcher, ensure_groups
from cfn_daemon.swarm.supervisor import Supervisor
from cfn_daemon.swarm.swarm_ids import SwarmIds
from cfn_daemon.util.aio import until_stopped
from cfn_daemon.util.restart import Keeper

log = structlog.get_logger("cfn.swarm")
SWARM_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class SwarmRuntime:
    """The background work of one swarm."""

    info: SwarmInfo
    dispatcher: Dispatcher
    supervisor: Supervisor
    stop: asyncio.Event
    task: asyncio.Task[None] | None = None


class SwarmService:
    """Create, inspect, scale and destroy swarms; run their background work."""

    def __init__(
        self,
        store: Store,
        config: ConfigManager,
        hub: NotifyHub,
        state_dir: Path,
        keeper: Keeper | None = None,
    ) -> None:
        self.store = store
        self.keeper = keeper or Keeper(is_outage=is_outage, wait_available=store.wait_available)
        self.config_manager = config
        self.hub = hub
        self.state_dir = state_dir
        self.scripts = Scripts(store.redis)
        self.tasks = TaskQueue(store.redis, store.keys, self.scripts)
        self.registry = AgentRegistry(store.redis, store.keys, self.scripts)
        self.runtimes: dict[str, SwarmRuntime] = {}
        self.swarm_ids = SwarmIds(store.redis, store.keys, hub)
        # `agents.max_llm_processes` counts LLM processes across every swarm: one ledger.
        self.llm = LlmSlots(wake=lambda swarm: hub.pulses(swarm).work.fire())
        self.ready = asyncio.Event()
        self._resume_error: Exception | None = None  # why resuming failed last, if it did
        self._tg: asyncio.TaskGroup | None = None
        self._lock = asyncio.Lock()
        # Test-mode swarms: who this cfnd is (host:state dir), and their TTL reaper.
        self.creator = ephemeral.creator_id(state_dir)
        self.reaper = ephemeral.Reaper(
            lambda: [rt.info for rt in self.runtimes.values()], self._finish_destroy
        )

    @property
    def redis(self) -> Any:
        return self.store.redis

    def config(self) -> Config:
        return self.config_manager.config

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Resume every swarm found in Redis, then keep their runtimes until ``stop``."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            while not self.ready.is_set():
                if not await until_stopped(self.store.wait_available(), stop):
                    break
                try:
                    await self._publish_agent_types()
                    for info in await self.all():
                        if ephemeral.stale_at_start(info, self.creator, now_ms()):
                            # Past its TTL, or its creator (this state dir's last cfnd)
                            # died: nobody else will ever remove it.
                            log.info("swarm_ephemeral_reaped", swarm=info.id)
                            await self.destroy(info.id, force=True)
                        elif info.status == "active":
                            # Once per swarm from an older cfnd: its task status indexes.
                            await self.tasks.index.ensure(info.id)
                            self._start_runtime(info)
                        elif info.status == "draining":
                            # cfnd died mid-destroy: finish the job (again after a failure).
                            tg.create_task(
                                self.keeper.run(
                                    f"destroy-{info.id}",
                                    functools.partial(self._finish_destroy, info.id),
                                    stop,
                                    swarm=info.id,
                                ),
                                name=f"destroy-{info.id}",
                            )
                    self.ready.set()
                    tg.create_task(
                        self.keeper.run("reaper", lambda: self.reaper.run(stop), stop),
                        name="swarm-reaper",
                    )
                except Exception as exc:
                    self._resume_error = exc
                    log.warning("swarm_resume_failed", error=describe_error(exc))
                    if not await until_stopped(asyncio.sleep(1.0), stop) or stop.is_set():
                        break  # stopping: never spin on a failure that persists
            await stop.wait()
            await self._destroy_own_ephemeral()
            for rt in self.runtimes.values():
                rt.stop.set()
        self._tg = None

    async def _destroy_own_ephemeral(self) -> None:
        """A clean stop removes the test-mode swarms this cfnd created (bounded: if Redis
        is away, the next cfnd on this state dir removes them at its start)."""
        for sid in ephemeral.own([rt.info for rt in self.runtimes.values()], self.creator):
            try:
                await asyncio.wait_for(self.destroy(sid, force=True), 30)
                log.info("swarm_ephemeral_destroyed", swarm=sid, reason="cfnd_stopping")
            except Exception as exc:
                log.warning("swarm_ephemeral_destroy_failed", swarm=sid, error=describe_error(exc))

    def _resume_denied(self) -> StoreDenied | None:
        error = self._resume_error
        return self.store.as_denied(error) if error is not None else None

    async def _finish_destroy(self, swarm: str) -> None:
        await self.destroy(swarm, force=True)

    async def _publish_agent_types(self) -> None:
        specs = agent_types.all_specs(self.config().agent_types)
        await self.redis.hset(
            self.store.keys.agent_types,
            mapping={n: agent_types.encode(s) for n, s in specs.items()},
        )

    def _start_runtime(self, info: SwarmInfo) -> SwarmRuntime:
        assert self._tg is not None, "swarm service is not running"
        if info.id in self.runtimes:  # resumed and created at the same time: one runtime
            return self.runtimes[info.id]
        stop = asyncio.Event()

        def current() -> SwarmInfo | None:
            rt = self.runtimes.get(info.id)
            return rt.info if rt else None

        ctx = SwarmContext(
            info.id,
            self.store,
            self.tasks,
            self.registry,
            self.config,
            current,
            self.llm,
            self.keeper,
        )
        rt = SwarmRuntime(
            info=info,
            dispatcher=Dispatcher(ctx, self.hub),
            supervisor=Supervisor(ctx, self.state_dir),
            stop=stop,
        )
        self.runtimes[info.id] = rt
        rt.task = self._tg.create_task(self._run_runtime(rt), name=f"swarm-{info.id}")
        return rt

    def resume(self, info: SwarmInfo) -> None:
        """Run the background work of a swarm written into Redis directly (an import)."""
        self._start_runtime(info)

    async def _run_runtime(self, rt: SwarmRuntime) -> None:
        try:
            # Each loop restarts by itself when it fails: one swarm's bad moment
            # never ends the others, nor cfnd.
            keep, sid = self.keeper.run, rt.info.id
            async with asyncio.TaskGroup() as tg:
                tg.create_task(
                    keep("dispatch", lambda: rt.dispatcher.run(rt.stop), rt.stop, swarm=sid),
                    name=f"dispatch-{sid}",
                )
                tg.create_task(
                    keep("supervise", lambda: rt.supervisor.run(rt.stop), rt.stop, swarm=sid),
                    name=f"supervise-{sid}",
                )
        finally:
            if self.runtimes.get(rt.info.id) in (rt, None):  # not a successor's report
                self.llm.forget(rt.info.id)

    async def runtime(self, swarm: str) -> SwarmRuntime:
        rt = self.runtimes.get(swarm)
        if rt is None:
            raise NotFound(f"swarm {swarm} is not running in this cfnd")
        await rt.supervisor.ready.wait()
        return rt

    # ------------------------------------------------------------------ lookup

    async def resolve(self, swarm: str | None) -> str:
        """``swarm`` if it exists; with None, the only swarm (else a specific error).

        From the cached ids; an answer other than "yes, that one" is re-checked in Redis
        (a swarm another cfnd created a moment ago is found)."""
        ids = await self.swarm_ids.get()
        if (swarm is None and len(ids) != 1) or (swarm is not None and swarm not in ids):
            ids = await self.swarm_ids.get(fresh=True)
        if swarm is not None:
            if swarm not in ids:
                raise NotFound(
                    f"no swarm {swarm!r}; existing: {', '.join(ids) or 'none'}",
                    details={"swarm": swarm, "swarms": ids},
                )
            return swarm
        if not ids:
            raise NotFound("there is no swarm yet; create one with `cfnctl swarm init mesh 4`")
        if len(ids) > 1:
            raise InvalidArgs(
                f"there are several swarms ({', '.join(ids)}); choose one with --swarm, "
                "CFN_SWARM or `cfnctl swarm use ID`",
                details={"swarms": ids},
            )
        return ids[0]

    async def info(self, swarm: str) -> SwarmInfo:
        raw = await self.redis.hgetall(self.store.keys.swarm_state(swarm))
        if not raw:
            raise NotFound(f"no swarm {swarm!r}")
        fields = {
            _text(k): _text(v) for k, v in raw.items() if _text(k) in SwarmInfo.__struct_fields__
        }
        info = msgspec.convert(fields, SwarmInfo, strict=False)
        agents = await self.registry.all(swarm)
        info.agents = sum(1 for a in agents if a.status in LIVE_STATUSES)
        return info

    async def all(self) -> list[SwarmInfo]:
        ids = sorted(_text(s) for s in await self.redis.smembers(self.store.keys.swarms))
        out = []
        for sid in ids:
            try:
                out.append(await self.info(sid))
            except NotFound:
                continue
        return out

    # ------------------------------------------------------------------ changes

    async def init(self, args: SwarmInitArgs, *, within_limits: bool = True) -> SwarmInfo:
        """Create a swarm. ``within_limits``: refuse one beyond ``[limits]`` (a reset, which
        recreates a swarm that already existed, is not held to limits lowered since)."""
        defaults = self.config().swarm  # what the request leaves out: `[swarm]` config
        max_agents = args.max_agents if args.max_agents is not None else defaults.max_agents
        topology = args.topology or defaults.topology
        strategy = args.strategy or defaults.strategy
        if not MIN_AGENTS <= max_agents <= MAX_AGENTS:
            raise InvalidArgs(
                f"max agents must be between {MIN_AGENTS} and {MAX_AGENTS}, got {max_agents}",
                details={"max_agents": max_agents},
            )
        limits = self.config().limits
        if within_limits and max_agents > limits.max_agents_per_swarm:
            raise InvalidArgs(
                f"max_agents {max_agents} exceeds this daemon's limit "
                f"{limits.max_agents_per_swarm} (limits.max_agents_per_swarm)",
                details={
                    "max_agents": max_agents,
                    "expected": f"<= {limits.max_agents_per_swarm}",
                },
            )
        if args.ttl_s is not None and not args.test_mode:
            raise InvalidArgs(
                "ttl_s is the lifetime of a test-mode swarm; add test_mode (--test-mode)"
            )
        ttl_s = DEFAULT_TEST_TTL_S if args.ttl_s is None else args.ttl_s
        if args.test_mode and not 0 < ttl_s <= MAX_TEST_TTL_S:
            raise InvalidArgs(
                f"ttl_s {ttl_s:g}: expected more than 0 and at most {MAX_TEST_TTL_S:g} s (7 days)",
                details={"ttl_s": ttl_s, "expected": f"0 < ttl_s <= {MAX_TEST_TTL_S:g}"},
            )
        sid = args.name or f"swarm-{uuid.uuid4().hex[:6]}"
        if not SWARM_ID.match(sid):
            raise InvalidArgs(
                f"swarm name {sid!r}: expected 1-32 of a-z, 0-9, '-', '_' (starting with a "
                "letter or digit)"
            )
        if not self.ready.is_set():  # swarms found in Redis are resumed first
            self.store.check()
            # Redis refusing cfnd a right (an ACL) is not an outage: say which one.
            denied = self._resume_denied()
            if denied is None:
                try:
                    await asyncio.wait_for(self.ready.wait(), 10)
                except TimeoutError:
                    denied = self._resume_denied()
                    if denied is None:
                        raise
            if not self.ready.is_set() and denied is not None:
                raise denied
        async with self._lock:
            exists = await self.redis.sismember(self.store.keys.swarms, sid)
            if exists and not args.force:
                raise Conflict(
                    f"swarm {sid} exists; use `cfnctl swarm use {sid}`, or --force to replace it",
                    details={"swarm": sid},
                )
            if exists:
                await self.destroy(sid, force=True)
            # The cap is checked and the id taken in one script: cfnds sharing this
            # Redis, racing to create swarms, can never pass limits.max_swarms.
            claimed = await self.scripts.run(
                "claim_swarm",
                [self.store.keys.swarms],
                [sid, limits.max_swarms if within_limits else 0],
            )
            if claimed == 1:
                await self.swarm_ids.announce(sid)
            if claimed == 0:
                raise Conflict(
                    f"swarm {sid} was just created by another request; use --force to replace it",
                    details={"swarm": sid},
                )
            if claimed == -1:
                raise Conflict(
                    f"this daemon already has {limits.max_swarms} swarms (limits.max_swarms); "
                    "destroy one first",
                    details={"max_swarms": limits.max_swarms},
                )
            info = SwarmInfo(
                id=sid,
                name=args.name or sid,
                topology=topology,
                strategy=strategy,
                max_agents=max_agents,
                status="active",
                created_ms=now_ms(),
                ephemeral=args.test_mode,
                expires_at_ms=now_ms() + int(ttl_s * 1000) if args.test_mode else 0,
                creator=self.creator if args.test_mode else "",
            )
            mapping: dict[str, Any] = {
                k: int(v) if isinstance(v, bool) else v
                for k, v in msgspec.structs.asdict(info).items()
                if k != "agents"
            }
            mapping[TASK_INDEX_FIELD] = TASK_INDEX_VERSION  # a new swarm's indexes are whole
            try:
                await self.redis.hset(self.store.keys.swarm_state(sid), mapping=mapping)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.redis.srem(self.store.keys.swarms, sid)  # give the place back
                    await self.swarm_ids.announce(sid)
                raise
            await ensure_groups(self.redis, [self.store.keys.queue(sid, p) for p in PRIORITIES])
            await emit(
                self.redis,
                self.store.keys,
                sid,
                "swarm.created",
                {
                    "swarm": sid,
                    "topology": info.topology,
                    "strategy": info.strategy,
                    "max_agents": info.max_agents,
                },
            )
            self._start_runtime(info)
            if info.ephemeral:
                self.reaper.wake.set()  # its TTL may end before the reaper's next look
        log.info(
            "swarm_created", swarm=sid, topology=info.topology, strategy=info.strategy,
            ephemeral=info.ephemeral, expires_at_ms=info.expires_at_ms,
        )  # fmt: skip
        return info

    async def destroy(self, swarm: str, *, force: bool) -> list[str]:
        """Stop intake, let agents finish (or stop them now with ``force``), delete it all."""
        await self.redis.hset(self.store.keys.swarm_state(swarm), "status", "draining")
        rt = self.runtimes.get(swarm)
        if rt is not None:
            rt.info.status = "draining"
        agents = [a for a in await self.registry.all(swarm) if a.status in LIVE_STATUSES]
        stopped = [a.id for a in agents]
        for agent in agents:
            await self.registry.set_fields(swarm, agent.id, desired="stop")
        if rt is not None:
            if not force:
                # Agents see desired=stop at their next heartbeat and finish their task.
                await rt.supervisor.wait_stopped(self.config().agents.stop_grace_s + 5.0)
            await rt.supervisor.stop_all(2.0 if force else 5.0)
            rt.stop.set()
            if rt.task is not None:
                await asyncio.wait({rt.task}, timeout=30)
            self.runtimes.pop(swarm, None)
        await self._delete_keys(swarm)
        log.info("swarm_destroyed", swarm=swarm, stopped_agents=stopped)
        return stopped

    async def _delete_keys(self, swarm: str) -> None:
        pattern = f"{self.store.keys.prefix}:{{{swarm}}}:*"
        batch: list[Any] = []
        async for key in self.redis.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                await self.redis.unlink(*batch)
                batch = []
        if batch:
            await self.redis.unlink(*batch)
        await self.redis.srem(self.store.keys.swarms, swarm)
        await self.swarm_ids.announce(swarm)

    async def status(self, swarm: str) -> SwarmStatusResult:
        info = await self.info(swarm)
        agents = await self.registry.all(swarm)
        return SwarmStatusResult(
            swarm=info,
            agents=[
                msgspec.convert(msgspec.structs.asdict(a), AgentInfo, strict=False) for a in agents
            ],
            queues=await self.tasks.queue_depths(swarm, {a.type for a in agents}),
            tasks=await self.tasks.counts(swarm),
        )

    async def _raise_cap(self, swarm: str, n: int, rt: SwarmRuntime) -> None:
        """Asked for more agents than the swarm's cap: the cap becomes ``n`` (2-50, within
        limits.max_agents_per_swarm), as the user asked for ``n`` agents."""
        limit = min(MAX_AGENTS, self.config().limits.max_agents_per_swarm)
        if n > limit:
            why = "a swarm's most" if limit == MAX_AGENTS else "limits.max_agents_per_swarm"
            raise InvalidArgs(
                f"scale target {n}: a swarm has at most {limit} agents ({why}); "
                f"expected 0..{limit}",
                details={"agents": n, "expected": f"<= {limit}"},
            )
        cap = int(await self.scripts.run("raise_cap", [self.store.keys.swarm_state(swarm)], [n]))
        if cap == 0:
            raise NotFound(f"no swarm {swarm!r}")
        rt.info.max_agents = max(rt.info.max_agents, cap)
        log.info("swarm_cap_raised", swarm=swarm, max_agents=cap)

    async def scale(self, swarm: str, n: int, agent_type: str, force: bool) -> SwarmScaleResult:
        """Up: spawn local agents of ``agent_type``. Down: stop idle agents first; busy
        ones only with ``force`` (they hand their task back)."""
        info = await self.info(swarm)
        if n < 0:
            raise InvalidArgs(f"scale target {n}: expected 0..{MAX_AGENTS} agents")
        rt = await self.runtime(swarm)
        if n > info.max_agents:
            await self._raise_cap(swarm, n, rt)
        live = [a for a in await self.registry.all(swarm) if a.status in LIVE_STATUSES]
        spawned: list[str] = []
        stopping: list[str] = []
        if n > len(live):
            spawned = await rt.supervisor.spawn(agent_type, count=n - len(live))
        elif n < len(live):
            excess = len(live) - n
            order = sorted(live, key=lambda a: (a.status != "idle", a.load, -a.started_ms))
            victims = order[:excess]
            busy = [a.id for a in victims if a.status != "idle" or a.load > 0]
            if busy and not force:
                raise Conflict(
                    f"scaling to {n} would stop busy agents ({', '.join(busy)}); wait for "
                    "them, or use --force (their tasks go back to the queue)",
                    details={"busy": busy},
                )
            for agent in victims:
                await rt.supervisor.request_stop(agent.id, force=force)
                stopping.append(agent.id)
        await emit(
            self.redis,
            self.store.keys,
            swarm,
            "swarm.scaled",
            {"target": n, "spawned": spawned, "stopping": stopping},
        )
        return SwarmScaleResult(swarm=swarm, spawned=spawned, stopping=stopping)
