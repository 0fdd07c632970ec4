"""``agent.debug``: one agent's record, pending work, recent events, log tail and
restart history, gathered with bounded reads (Redis pages, the log file's end)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from cfn_client.wire.schema.debug import (
    LOG_TAIL_BYTES,
    VERBOSE_LOG_TAIL_BYTES,
    AgentDebugArgs,
    AgentDebugResult,
    RestartHistory,
    WorkEntry,
)
from cfn_client.wire.schema.swarm import AgentInfo, Event
from cfn_daemon.core import agent_history
from cfn_daemon.queue.agents import host_name
from cfn_daemon.queue.events import decode_event
from cfn_daemon.store.keys import AGENT_GROUP, EVENTS_MAXLEN
from cfn_daemon.swarm.service import SwarmService
from cfn_daemon.util.tail import read_tail

#: Work stream entries shown (an agent holds a few; the count says if there are more).
WORK_SHOWN = 100
_EVENT_PAGE = 500


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def agent_debug(service: SwarmService, args: AgentDebugArgs) -> AgentDebugResult:
    """Everything cfn knows about one agent (``NotFound`` naming it when unknown)."""
    swarm = await service.resolve(args.swarm)
    record = await service.registry.get(swarm, args.agent)  # NotFound names the agent
    redis, keys = service.redis, service.store.keys
    limit = args.events if args.events is not None else (50 if args.verbose else 20)
    events = await _events_of(redis, keys.events(swarm), swarm, args.agent, limit)
    work, total = await _work(redis, keys.work(swarm, args.agent))
    cfg = service.config().agents
    restart = RestartHistory(
        restarts=record.restarts,
        exits=agent_history.exits(events, args.agent),
        max_per_minute=cfg.max_restarts_per_minute,
        backoff_s=cfg.restart_backoff_s,
        backoff_max_s=cfg.restart_backoff_max_s,
    )
    restart.replaces, restart.replaced_by = agent_history.replacement_of(events, args.agent)
    if record.slot and restart.replaces is None:
        restart.replaces = record.slot
    rt = service.runtimes.get(swarm)
    supervised = rt is not None and args.agent in rt.supervisor.local
    if rt is not None:
        due, restart.starts_last_minute = rt.supervisor.restart_view(args.agent)
        restart.pending_replacement = due is not None
        restart.replacement_due_in_s = None if due is None else round(due, 3)
    result = AgentDebugResult(
        agent=msgspec.convert(msgspec.structs.asdict(record), AgentInfo, strict=False),
        desired=record.desired,
        supervised_here=supervised,
        work=work,
        work_total=total,
        events=events,
        restart=restart,
    )
    # Only a file cfnd itself writes for a local agent (an id is never a path).
    safe = "/" not in args.agent and not args.agent.startswith(".")
    if record.local and record.host == host_name() and rt is not None and safe:
        path = rt.supervisor.log_dir / f"{args.agent}.log"
        size = VERBOSE_LOG_TAIL_BYTES if args.verbose else LOG_TAIL_BYTES
        tail = await asyncio.to_thread(read_tail, path, size)
        result.log_path = str(path)
        if tail is not None:
            result.log_tail, result.log_bytes = tail.text, tail.size
            result.log_truncated = tail.truncated
    if args.verbose:
        raw = await redis.hgetall(keys.agent(swarm, args.agent))
        result.record = {_text(k): _text(v) for k, v in raw.items()}
    return result


async def _events_of(redis: Any, key: str, swarm: str, agent: str, limit: int) -> list[Event]:
    """The agent's last ``limit`` events, oldest first: the stream read backwards in
    pages, never further than its length (it is capped at EVENTS_MAXLEN, approximately)."""
    found: list[Event] = []
    end = "+"
    for _ in range(EVENTS_MAXLEN // _EVENT_PAGE + 2):
        if len(found) >= limit:
            break
        page = await redis.xrevrange(key, max=end, min="-", count=_EVENT_PAGE)
        for eid, fields in page:
            ev = decode_event(swarm, eid, fields)
            if agent_history.mentions(ev, agent):
                found.append(ev)
                if len(found) >= limit:
                    break
        if len(page) < _EVENT_PAGE:
            break
        end = f"({_text(page[-1][0])}"
    return found[::-1]


async def _work(redis: Any, key: str) -> tuple[list[WorkEntry], int]:
    """The agent's unacknowledged work (assigned, delivered or not) and how much in all."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(key)
        pipe.xrange(key, count=WORK_SHOWN)
        pipe.xpending_range(key, AGENT_GROUP, min="-", max="+", count=WORK_SHOWN)
        total, entries, pending = await pipe.execute(raise_on_error=False)
    for reply in (total, entries):
        if isinstance(reply, Exception):
            raise reply
    if isinstance(pending, ResponseError):
        pending = []  # no group yet (an agent that never registered): entries alone
    elif isinstance(pending, Exception):
        raise pending
    pel = {_text(p["message_id"]): p for p in pending}
    out = []
    for eid, fields in entries:
        entry_id = _text(eid)
        p = pel.get(entry_id)
        out.append(
            WorkEntry(
                entry_id=entry_id,
                task=_text(fields.get(b"t", b"")),
                delivered=p is not None,
                idle_ms=int(p["time_since_delivered"]) if p is not None else None,
                deliveries=int(p["times_delivered"]) if p is not None else 0,
            )
        )
    return out, int(total)
