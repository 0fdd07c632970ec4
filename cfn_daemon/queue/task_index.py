"""The task status indexes: O(1) counts, exact pages, retention by score ranges.

Every script that changes a task's status moves its id between the per-status
zsets ``cfn:{s}:st:<status>`` (scored by when it entered the status) in the same
step, so:

- counts are seven ZCARDs, whatever the number of stored tasks;
- ``task list --status X`` pages through one index, newest first, with a cursor;
- retention takes the finished tasks whose score is past the cutoff, a bounded
  batch at a time, and ``retain.lua`` re-checks each one before deleting it.

A swarm written by a cfnd from before the indexes gets them rebuilt once, in
batches (``ensure``), when its runtime starts.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from cfn_client.wire.errors import InvalidArgs
from cfn_daemon.store.keys import TASK_INDEX_FIELD, TASK_INDEX_VERSION, TASK_STATUSES, Keys
from cfn_daemon.store.scripts import Scripts

#: Tasks per retention / rebuild script call: each call is short, so Redis stays
#: responsive while a big backlog is worked through.
BATCH = 500
#: Batches one retention pass handles at most; the next pass goes on from there.
MAX_BATCHES_PER_PASS = 200
FINISHED = ("succeeded", "failed", "cancelled")
LIVE = ("queued", "assigned", "running", "retrying")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def encode_cursor(score: float, member: str) -> str:
    return f"{int(score)}:{member}"


def decode_cursor(cursor: str) -> tuple[int, str]:
    score, sep, member = cursor.partition(":")
    if not sep or not score.isdigit() or not member:
        raise InvalidArgs(
            f"cursor {cursor!r}: expected the next_cursor of a previous page",
            details={"cursor": cursor},
        )
    return int(score), member


class TaskIndex:
    """Reads and maintenance of one prefix's task indexes."""

    def __init__(self, redis: Any, keys: Keys, scripts: Scripts) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = scripts

    async def counts(self, swarm: str) -> dict[str, int]:
        """Tasks by status (only statuses with tasks): seven ZCARDs, one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.keys.status_indexes(swarm):
                pipe.zcard(key)
            sizes = await pipe.execute()
        return {s: int(n) for s, n in zip(TASK_STATUSES, sizes, strict=True) if n}

    async def page(
        self, swarm: str, status: str | None, limit: int, cursor: str | None = None
    ) -> tuple[list[str], str | None]:
        """Up to ``limit`` task ids, newest first, and the cursor of the next page (None
        at the end). All tasks are ordered by creation; one status by entry into it."""
        pairs, more = await self.page_scored(swarm, status, limit, cursor)
        ids = [m for m, _ in pairs]
        return ids, (encode_cursor(pairs[-1][1], ids[-1]) if more and ids else None)

    async def page_scored(
        self, swarm: str, status: str | None, limit: int, cursor: str | None = None
    ) -> tuple[list[tuple[str, float]], bool]:
        """``page`` with each id's index score, and whether more entries follow."""
        if status is not None and status not in TASK_STATUSES:
            raise InvalidArgs(
                f"status {status!r}: expected one of {', '.join(TASK_STATUSES)}",
                details={"status": status},
            )
        key = self.keys.tasks(swarm) if status is None else self.keys.status_index(swarm, status)
        score, member = decode_cursor(cursor) if cursor else ("", "")
        # One more than asked: whether there is a next page, without another call.
        flat = await self.scripts.run("page", [key], [score, member, limit + 1])
        pairs = [(_text(m), float(s)) for m, s in zip(flat[::2], flat[1::2], strict=True)]
        return pairs[:limit], len(pairs) > limit

    async def finished_ids_since(
        self, swarm: str, status: str, since_ms: int, limit: int
    ) -> list[str]:
        """The newest ``limit`` tasks that reached ``status`` at or after ``since_ms``."""
        raw = await self.redis.zrevrangebyscore(
            self.keys.status_index(swarm, status), "+inf", since_ms, start=0, num=limit
        )
        return [_text(t) for t in raw]

    async def live_ids(self, swarm: str) -> AsyncGenerator[str, None]:
        """Every unfinished task id, a page at a time (bounded by the live tasks)."""
        for status in LIVE:
            cursor: str | None = None
            while True:
                ids, cursor = await self.page(swarm, status, BATCH, cursor)
                for tid in ids:
                    yield tid
                if cursor is None:
                    break

    async def unfinished(self, swarm: str) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for status in LIVE:
                pipe.zcard(self.keys.status_index(swarm, status))
            return sum(int(n) for n in await pipe.execute())

    async def finished_since(self, swarm: str, since_ms: int) -> dict[str, int]:
        """How many tasks reached each final status at or after ``since_ms``."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for status in FINISHED:
                pipe.zcount(self.keys.status_index(swarm, status), since_ms, "+inf")
            return dict(zip(FINISHED, (int(n) for n in await pipe.execute()), strict=True))

    async def expire(self, swarm: str, cutoff_ms: int) -> int:
        """Delete finished tasks that finished at or before ``cutoff_ms``; how many.

        Bounded: at most MAX_BATCHES_PER_PASS batches of BATCH per call."""
        deleted = 0
        for status in FINISHED:
            index = self.keys.status_index(swarm, status)
            for _ in range(MAX_BATCHES_PER_PASS):
                raw = await self.redis.zrangebyscore(index, "-inf", cutoff_ms, start=0, num=BATCH)
                ids = [_text(t) for t in raw]
                if not ids:
                    break
                deleted += int(
                    await self.scripts.run(
                        "retain",
                        [
                            self.keys.tasks(swarm),
                            *(self.keys.task(swarm, t) for t in ids),
                            *self.keys.status_indexes(swarm),
                        ],
                        [status, cutoff_ms, *ids],
                    )
                )
                if len(ids) < BATCH:
                    break
        return deleted

    async def ensure(self, swarm: str) -> int:
        """Build the indexes of a swarm written by an older cfnd (once); how many tasks."""
        state = self.keys.swarm_state(swarm)
        if _text(await self.redis.hget(state, TASK_INDEX_FIELD) or "") == TASK_INDEX_VERSION:
            return 0
        done = 0
        start = 0
        while True:  # bounded by the stored tasks, a batch per round trip
            ids = [
                _text(t)
                for t in await self.redis.zrange(self.keys.tasks(swarm), start, start + BATCH - 1)
            ]
            if not ids:
                break
            await self.scripts.run(
                "reindex",
                [*(self.keys.task(swarm, t) for t in ids), *self.keys.status_indexes(swarm)],
                ids,
            )
            done += len(ids)
            start += BATCH
        await self.redis.hset(state, TASK_INDEX_FIELD, TASK_INDEX_VERSION)
        return done
