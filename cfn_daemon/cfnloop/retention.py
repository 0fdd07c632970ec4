"""Retention of CFN runs and epics: ``loop.run_retention_s`` after they ended.

A run that belongs to no epic goes on its own once it is finished and was last
updated before the cutoff: its record, event log and vote streams, in one MULTI
(event ``loop.expired``). An epic's runs go with the epic, once the epic is done or
failed and every run of it ended before the cutoff (event ``epic.expired``): an
epic must never outlive its runs, or its phases would look unstarted.

A pass looks at the runs and epics *created* before the cutoff (index ranges,
a batch at a time), so its work is bounded by what may expire.
"""

from __future__ import annotations

from typing import Any

import msgspec

from cfn_daemon.core import loop
from cfn_daemon.queue.events import queue_events
from cfn_daemon.store.keys import Keys

BATCH = 200
MAX_BATCHES = 50


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def run_keys(keys: Keys, swarm: str, state: loop.RunState) -> list[str]:
    """Every key a run owns: record, log, and the vote streams of each round (per
    candidate too: compete mode signs votes for ``run#candidate``)."""
    ballots = [state.run_id] + [
        f"{state.run_id}#{c}" for c in [*state.implementers, "candidate", state.winner or ""] if c
    ]
    votes = [
        keys.votes(swarm, b, n)
        for b in dict.fromkeys(ballots)
        for n in range(state.loop2_round + 2)
    ]
    return [keys.run(swarm, state.run_id), keys.run_log(swarm, state.run_id), *votes]


async def load_run(
    redis: Any, keys: Keys, swarm: str, run_id: str
) -> tuple[loop.RunState, int, bool] | None:
    """(state, updated ms, belongs to an epic), or None if there is no such run."""
    raw = await redis.hmget(
        keys.run(swarm, run_id), "state", "updated_ms", "epic", "workspace", "ws:cleaned"
    )
    if raw[0] is None:
        return None
    state = msgspec.json.decode(raw[0], type=loop.RunState)
    # A run with a phase and no epic mark is kept too (an older cfnd's epic run).
    held = bool(raw[2]) or state.phase is not None
    # Its worktrees and branches go first (loop.workspace_retention_s): a run is never
    # deleted with its workspace left behind.
    updated = int(raw[1] or 0) if not (raw[3] and not raw[4]) else 2**62
    return state, updated, held


async def expire_runs(redis: Any, keys: Keys, swarm: str, cutoff_ms: int) -> int:
    """Delete finished runs of no epic that ended before ``cutoff_ms``; how many."""
    deleted = 0
    start = 0
    for _ in range(MAX_BATCHES):
        ids = [
            _text(r)
            for r in await redis.zrangebyscore(
                keys.runs(swarm), "-inf", cutoff_ms, start=start, num=BATCH
            )
        ]
        if not ids:
            break
        for run_id in ids:
            loaded = await load_run(redis, keys, swarm, run_id)
            if loaded is None:
                await redis.zrem(keys.runs(swarm), run_id)  # a dangling index entry
                continue
            state, updated, of_epic = loaded
            if of_epic or state.status not in loop.TERMINAL or updated > cutoff_ms:
                start += 1  # kept: the next batch starts after it
                continue
            async with redis.pipeline(transaction=True) as pipe:
                pipe.unlink(*run_keys(keys, swarm, state))
                pipe.zrem(keys.runs(swarm), run_id)
                queue_events(pipe, keys, swarm, [("loop.expired", {"run": run_id})])
                await pipe.execute()
            deleted += 1
        if len(ids) < BATCH:
            break
    return deleted


async def expire_epic(
    redis: Any, keys: Keys, swarm: str, epic_id: str, run_ids: list[str], cutoff_ms: int
) -> bool:
    """Delete a finished epic and its runs if every run ended before ``cutoff_ms``."""
    doomed: list[str] = [keys.epic(swarm, epic_id)]
    for run_id in run_ids:
        loaded = await load_run(redis, keys, swarm, run_id)
        if loaded is None:
            continue
        state, updated, _ = loaded
        if state.status not in loop.TERMINAL or updated > cutoff_ms:
            return False
        doomed += run_keys(keys, swarm, state)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.unlink(*doomed)
        pipe.zrem(keys.epics(swarm), epic_id)
        if run_ids:
            pipe.zrem(keys.runs(swarm), *run_ids)
        queue_events(pipe, keys, swarm, [("epic.expired", {"epic": epic_id, "runs": run_ids})])
        await pipe.execute()
    return True
