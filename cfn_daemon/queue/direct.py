"""Direct dispatch (``[tasks] dispatch = "direct"``): untargeted tasks of one type go to
that type's own streams (``keys.direct``, one per priority), which its agents read
themselves as consumers of group ``agent`` — no dispatcher pass, no assignment, no
per-agent work entry. An agent reads only while it has a free slot, so the group
spreads the work by free capacity (what ``balanced`` means).

What stays with the dispatcher: pinned tasks, replicated tasks (``reliability``), the
topologies that route (ring, star, hierarchical), ``performance``'s pick by speed,
the LLM cap, and every retry or requeue (those go back on the routed queues).

An entry is acknowledged and deleted by ``complete.lua`` (or by ``start.lua`` when the
task was cancelled meanwhile), after its result is stored: at-least-once as before.
Entries a lost agent had read are given back by ``reclaim``: a task it never started
goes back on the same stream, one it was running is requeued as ``agent-lost``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.exceptions import ResponseError

from cfn_daemon.core.placement import PRIORITIES
from cfn_daemon.queue.streams import ack_and_delete
from cfn_daemon.store.keys import AGENT_GROUP, Keys

RECLAIM_PAGE = 500
RECLAIM_PAGES_MAX = 1000  # a bound: an agent never holds more than its concurrency
# The cfnd side's consumer name while it hands a lost agent's entries back.
RECLAIM_CONSUMER = "cfnd-reclaim"


def streams(keys: Keys, swarm: str, agent_type: str) -> list[str]:
    """A type's direct streams, highest priority first."""
    return [keys.direct(swarm, agent_type, p) for p in PRIORITIES]


async def ensure_groups(redis: Any, keys: Keys, swarm: str, agent_type: str) -> None:
    """The ``agent`` group on each of the type's direct streams (from the start, so
    entries added before the first agent of the type came are read too)."""
    for stream in streams(keys, swarm, agent_type):
        try:
            await redis.xgroup_create(stream, AGENT_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


async def depths(redis: Any, keys: Keys, swarm: str, types: Iterable[str]) -> dict[str, int]:
    """Entries nobody has read yet, per priority, over the direct streams of ``types``."""
    out = dict.fromkeys(PRIORITIES, 0)
    names = sorted(set(types))
    if not names:
        return out
    async with redis.pipeline(transaction=False) as pipe:
        for t in names:
            for stream in streams(keys, swarm, t):
                pipe.xinfo_groups(stream)
        replies = await pipe.execute(raise_on_error=False)
    for i, reply in enumerate(replies):
        if isinstance(reply, Exception):
            continue  # no such stream yet: nothing queued
        for group in reply:
            name = group.get("name")
            if name in (AGENT_GROUP, AGENT_GROUP.encode()):
                out[PRIORITIES[i % len(PRIORITIES)]] += int(group.get("lag") or 0)
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def reclaim(
    redis: Any,
    keys: Keys,
    swarm: str,
    agent: str,
    agent_type: str,
    requeue_lost: Callable[[str], Awaitable[bool]],
) -> list[str]:
    """Give back the direct entries ``agent`` had read; returns the requeued task ids.

    ``requeue_lost(task_id)`` requeues a task the agent was running (``agent-lost``,
    by the retry policy) and says whether it went back on a queue.
    """
    requeued: list[str] = []
    for stream in streams(keys, swarm, agent_type):
        for _ in range(RECLAIM_PAGES_MAX):
            try:
                pending = await redis.xpending_range(
                    stream, AGENT_GROUP, min="-", max="+", count=RECLAIM_PAGE, consumername=agent
                )
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    break
                raise
            if not pending:
                break
            ids = [p["message_id"] for p in pending]
            # Claimed to cfnd's name first: the fields come with it, and the entries are
            # no longer the lost agent's should it come back meanwhile.
            claimed = await redis.xclaim(stream, AGENT_GROUP, RECLAIM_CONSUMER, 0, ids)
            found = {_text(eid): fields for eid, fields in claimed if fields}
            for eid in ids:
                fields = found.get(_text(eid))
                tid = _text(fields[b"t"]) if fields else ""
                if tid and await _give_back(redis, keys, swarm, agent, stream, tid, requeue_lost):
                    requeued.append(tid)
            # After the page was given back: a crash before this leaves at most a stale
            # duplicate entry, which start.lua skips (its task is no longer queued).
            await ack_and_delete(redis, stream, ids)
    return requeued


async def _give_back(
    redis: Any,
    keys: Keys,
    swarm: str,
    agent: str,
    stream: str,
    tid: str,
    requeue_lost: Callable[[str], Awaitable[bool]],
) -> bool:
    status, owner = await redis.hmget(keys.task(swarm, tid), "status", "agent")
    if status in (b"queued", "queued"):
        # Read but never started: a new entry on the same stream, for another agent.
        await redis.xadd(stream, {"t": tid})
        return True
    if status in (b"running", "running") and _text(owner or b"") == agent:
        return await requeue_lost(tid)
    return False  # finished, cancelled, or someone else's now: only the entry goes
