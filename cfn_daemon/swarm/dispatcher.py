"""The per-swarm dispatcher: queue entries → agents, by topology and strategy.

It reads the three priority streams as consumer ``cfnd`` of group ``dispatch``;
entries it cannot place yet stay in that group's pending list (and in memory), so
a restarted cfnd picks them up again with ``XREADGROUP ... 0``.

Order: high before normal before low, except that a task waiting longer than
``tasks.aging_s`` is served before newer higher-priority tasks (no starvation).
Strategy: ``balanced`` gives each task to the least-loaded agent, ``performance``
to the agent with the fastest measured task time, ``reliability`` to two agents
(the first valid result wins). Topology: ring passes a work token in ring order;
star and hierarchical assign through the hub/root (recorded as ``via``), filling
the spokes/leaves first. LLM cap: with ``agents.max_llm_processes`` > 0, LLM tasks
start only while the LLM processes of every swarm of this cfnd stay within it
(``LlmSlots``); the rest stays in the backlog and the pending list until one ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import structlog

from cfn_daemon.core.backlog import Backlog
from cfn_daemon.core.placement import PRIORITIES, AgentRecord, Pending, llm_load, plan
from cfn_daemon.queue.notify import NotifyHub, WorkNews
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.store.client import describe_error, is_unavailable_error
from cfn_daemon.store.keys import DISPATCH_CONSUMER, DISPATCH_GROUP
from cfn_daemon.swarm.context import SwarmContext
from cfn_daemon.util.aio import until_stopped

log = structlog.get_logger("cfn.dispatch")
READ_COUNT = 500
PENDING_PAGES_MAX = 100_000  # 50M entries: a bound, not a limit anyone reaches
RECHECK_S = 2.0  # safety net: re-examine the backlog even if a notification was missed
PENDING_RESCAN_S = 30.0  # re-read our whole pending list this often (see run)
AGENTS_REFRESH_S = 1.0  # the in-memory agent view is re-read from Redis at least this often


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def ensure_groups(redis: Any, queues: list[str]) -> None:
    for q in queues:
        try:
            await redis.xgroup_create(q, DISPATCH_GROUP, id="0", mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise


class Dispatcher:
    """Assigns one swarm's queued tasks until stopped."""

    def __init__(self, ctx: SwarmContext, hub: NotifyHub) -> None:
        self.swarm = ctx.swarm
        self.store = ctx.store
        self.tasks = ctx.tasks
        self.registry = ctx.registry
        self.hub = hub
        self.config = ctx.config
        self.info = ctx.info
        self.llm = ctx.llm
        self.backlog = Backlog()
        self.live_types: set[str] = set()  # agent types seen live on the last pass
        # The agents as last read (with when), kept up to date between reads from the
        # capacity each completion announces and from what this dispatcher assigns.
        # It is only a hint: assign.lua refuses an agent that is gone or full, and a
        # refusal, a membership change or AGENTS_REFRESH_S re-reads it.
        self._agents: list[AgentRecord] | None = None
        self._agents_read = 0.0
        self._cursor: str | None = None
        self.assigned_total = 0
        self.llm_held = 0  # LLM tasks the last pass left waiting for the LLM cap

    @property
    def queues(self) -> list[str]:
        return [self.store.keys.queue(self.swarm, p) for p in PRIORITIES]

    async def run(self, stop: asyncio.Event) -> None:
        first = True
        scanned = time.monotonic()
        pulses = self.hub.pulses(self.swarm)
        news = pulses.take_news()
        while not stop.is_set():
            pulse = pulses.work.current()
            # Safety net: redis-py retries a read whose reply timed out, and the retry
            # returns newer entries; those of the lost reply sit in our pending list.
            if time.monotonic() - scanned >= PENDING_RESCAN_S:
                first = True
            again = False
            try:
                if first:
                    await ensure_groups(self.store.redis, self.queues)
                    await self._read_pending()  # our pending entries from before a restart
                    first = False
                    scanned = time.monotonic()
                self._apply(news)
                # Only a queued task brings queue entries: a capacity change does not.
                if news.queued:
                    await self._read(">")
                again = await self._assign_backlog()
            except Exception as exc:
                # A reply lost on the wire (Redis stalled or restarted mid-command)
                # leaves entries delivered to us unseen: read our pending list again.
                first = True
                news = pulses.take_news().everything()
                if not is_unavailable_error(exc):
                    log.exception("dispatch_failed", swarm=self.swarm)
                else:
                    log.warning(
                        "dispatch_store_unavailable", swarm=self.swarm, error=describe_error(exc)
                    )
                    await until_stopped(self.store.wait_available(), stop)
                continue
            if not again:
                await until_stopped(asyncio.wait_for(pulse.wait(), RECHECK_S), stop)
            news = pulses.take_news()
            if not pulse.is_set():
                news.everything()  # the safety-net recheck: read and look at everything

    def _apply(self, news: WorkNews) -> None:
        """What the notifications said about the agents since the last pass."""
        if news.agents_changed:
            self._agents = None
            return
        if not news.capacity or self._agents is None:
            return
        by_id = {a.id: a for a in self._agents}
        for agent_id, (load, status) in news.capacity.items():
            rec = by_id.get(agent_id)
            if rec is None:
                self._agents = None  # an agent we have not read yet
                return
            if status == "idle":
                rec.load, rec.status = load, "idle"
            elif status == "busy":
                rec.load, rec.status = load, "busy"
            else:  # complete.lua only says idle or busy
                self._agents = None
                return

    async def _agent_view(self) -> list[AgentRecord]:
        """The agents (heartbeat ages as of now), read again when stale or unknown."""
        now = time.monotonic()
        if self._agents is None or now - self._agents_read >= AGENTS_REFRESH_S:
            self._agents = await self.registry.all(self.swarm)
            self._agents_read = now
            return list(self._agents)
        aged_ms = int((now - self._agents_read) * 1000)
        return [
            msgspec.structs.replace(a, heartbeat_age_ms=(a.heartbeat_age_ms or 0) + aged_ms)
            for a in self._agents
        ]

    async def _read(self, start: str) -> None:
        for _ in range(1000):  # bounded drain of what is there right now
            reply: Any = await self.store.redis.xreadgroup(
                DISPATCH_GROUP,
                DISPATCH_CONSUMER,
                dict.fromkeys(self.queues, start),
                count=READ_COUNT,
            )
            entries = [(q, eid, f) for q, items in reply or [] for eid, f in items]
            if not entries:
                return
            await self._remember(entries)
            if len(entries) < READ_COUNT:
                return

    async def _read_pending(self) -> None:
        """Every entry of our pending list (the whole of it, a page at a time per queue):
        what a previous cfnd read but had not assigned when it stopped."""
        after: dict[Any, Any] = dict.fromkeys(self.queues, "0")
        for _ in range(PENDING_PAGES_MAX):
            if not after:
                return
            reply: Any = await self.store.redis.xreadgroup(
                DISPATCH_GROUP, DISPATCH_CONSUMER, after, count=READ_COUNT
            )
            pages = {_text(q): items for q, items in reply or []}
            entries = [(q, eid, f) for q, items in pages.items() for eid, f in items]
            await self._remember(entries)
            for queue in list(after):
                items = pages.get(queue, [])
                if len(items) < READ_COUNT:
                    del after[queue]  # this queue's pending list is done
                else:
                    after[queue] = _text(items[-1][0])
        log.warning("dispatch_pending_not_drained", swarm=self.swarm, pages=PENDING_PAGES_MAX)

    async def _remember(self, entries: list[tuple[Any, Any, Any]]) -> None:
        fresh = []
        deleted: dict[str, list[str]] = {}
        for queue, eid, fields in entries:
            entry_id = eid.decode() if isinstance(eid, bytes) else str(eid)
            if not fields:
                # Pending, but the entry itself is gone (XDEL'd): nothing to assign.
                deleted.setdefault(_text(queue), []).append(entry_id)
                continue
            tid = fields[b"t"].decode()
            prio = (queue.decode() if isinstance(queue, bytes) else queue).rsplit(":", 1)[1]
            ttype = fields.get(b"y")
            if ttype is not None:  # the entry says all we place it by (queue_entry in Lua)
                target = fields.get(b"g")
                self._keep(
                    Pending(
                        entry_id,
                        tid,
                        prio,
                        ttype.decode(),
                        int(fields.get(b"e") or now_ms()),
                        target.decode() if target else None,
                    )
                )
                continue
            fresh.append((entry_id, tid, prio))  # an entry of an older cfnd: read the task
        if not fresh and not deleted:
            return
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for queue, ids in deleted.items():
                pipe.xack(queue, DISPATCH_GROUP, *ids)
            for _, tid, _ in fresh:
                pipe.hmget(self.store.keys.task(self.swarm, tid), "type", "enqueued_ms", "target")
            meta = (await pipe.execute())[len(deleted) :]
        for (entry_id, tid, prio), (ttype, enq, target) in zip(fresh, meta, strict=True):
            self._keep(
                Pending(
                    entry_id,
                    tid,
                    prio,
                    (ttype or b"").decode(),
                    int(enq or now_ms()),
                    target.decode() if target else None,
                )
            )

    def _keep(self, pending: Pending) -> None:
        self.backlog[pending.key] = pending

    def _ordered(self) -> list[Pending]:
        return list(self._in_order())

    def _in_order(self) -> Iterator[Pending]:
        return self.backlog.ordered(now_ms(), self.config().tasks.aging_s * 1000)

    async def _assign_backlog(self) -> bool:
        """One placement pass; True when it should run again at once (an assignment was
        refused on a stale agent view, which is now dropped)."""
        swarm = self.info()
        cfg = self.config()
        cap = cfg.agents.max_llm_processes
        wanted = bool(self.backlog) and swarm is not None and swarm.status == "active"
        # Under a cap, a swarm with LLM work in flight keeps reporting its load (even
        # with nothing to assign) so other swarms see the room it frees.
        if not wanted and not (cap and self.llm.load(self.swarm) != 0):
            return False
        fresh = self._agents is None or time.monotonic() - self._agents_read >= AGENTS_REFRESH_S
        agents = await self._agent_view()

        def is_llm(agent_type: str) -> bool:
            return self.llm.is_llm(agent_type, cfg)

        own = llm_load(agents, is_llm) if cap else 0
        if not wanted or swarm is None:
            self.llm.report(self.swarm, own)
            self.llm_held = 0
            return False
        lapse_ms = cfg.agents.lapse_s * 1000
        agents = [a for a in agents if (a.heartbeat_age_ms or 0) <= lapse_ms]
        self.live_types = {a.type for a in agents if a.status in ("idle", "busy")}
        started = time.monotonic()
        # No await from the room to the report: swarms cannot overbook between them.
        room = self.llm.room(self.swarm, own, cap)
        chosen = plan(swarm, agents, self._in_order(), self._cursor, is_llm=is_llm, llm=room)
        if cap:
            self.llm.report(self.swarm, own + chosen.llm_used, held=chosen.llm_held > 0)
        self.llm_held = chosen.llm_held
        self._cursor = chosen.cursor
        outcomes = await self.tasks.assign_many(
            self.swarm,
            [
                (c.pending.task_id, c.pending.entry_id, c.pending.priority, c.agents, c.via)
                for c in chosen.placements
            ],
        )
        refused = False
        by_id = {a.id: a for a in self._agents or []}
        for c, placed in zip(chosen.placements, outcomes, strict=True):
            if placed < 0:
                refused = True  # an agent vanished or is full: it stays in the backlog
                continue
            del self.backlog[c.pending.key]
            self.assigned_total += placed
            for aid in c.agents if placed else ():
                rec = by_id.get(aid)
                if rec is not None:
                    rec.load += 1
                    rec.status = "busy"
        if refused:
            self._agents = None  # read them again: the view was wrong
        if self.backlog:
            log.debug(
                "dispatch_waiting",
                swarm=self.swarm,
                waiting=len(self.backlog),
                llm_held=chosen.llm_held,
                took_ms=round((time.monotonic() - started) * 1000, 2),
            )
        return refused and not fresh
