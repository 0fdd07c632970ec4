"""Snapshots of swarms: build the document from Redis (read in pages), and import one
(each swarm written in one MULTI, so it is there whole or not at all).

What is kept: each swarm's state and task counters; its agents' records; its tasks
(with their place in the dead-letter queue); its CFN-loop runs with their logs; its
epics; the runtime config overrides. Not kept: events, heartbeats, vote streams and
signing keys, performance samples (agents make new ones when they run again).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis.exceptions import WatchError

from cfn_client.wire.errors import Conflict, InvalidArgs
from cfn_client.wire.schema.snapshot import (
    MAX_SNAPSHOT_BYTES,
    Record,
    SnapAgent,
    SnapEpic,
    SnapRun,
    Snapshot,
    SnapshotImportResult,
    SnapStreamEntry,
    SnapSwarm,
    SnapTask,
)
from cfn_daemon.core import seals
from cfn_daemon.core import snapshot as rules
from cfn_daemon.core.placement import PRIORITIES
from cfn_daemon.queue.events import queue_events
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.store.keys import DISPATCH_GROUP
from cfn_daemon.swarm.service import SWARM_ID, SwarmService

#: Records read per pipeline, entries per XRANGE / ZRANGE page.
BATCH = 100
PAGE = 1000
_MAX_PAGES = 10_000_000 // PAGE


def _text(value: Any) -> str:
    # cfn writes text only; a foreign byte is replaced rather than failing the backup.
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _record(raw: dict[Any, Any]) -> Record:
    # A task's seal is stored as raw bytes (core.seals.pack); the snapshot keeps its text.
    return {_text(k): seals.unpack(v) if k == b"seal" else _text(v) for k, v in raw.items()}


class SnapshotTooLarge(InvalidArgs):
    pass


# --------------------------------------------------------------------------- export


async def export(service: SwarmService, swarm: str | None) -> bytes:
    """The document (JSON bytes) of every swarm, or of ``swarm``."""
    redis, keys = service.redis, service.store.keys
    if swarm is not None:
        ids = [await service.resolve(swarm)]
    else:
        ids = sorted(_text(s) for s in await redis.smembers(keys.swarms))
    doc = Snapshot(
        format="cfn-snapshot",
        version=1,
        created_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        config=_record(await redis.hgetall(keys.config)),
    )
    size = 0
    for sid in ids:
        state = _record(await redis.hgetall(keys.swarm_state(sid)))
        if not state:
            continue  # destroyed meanwhile
        doc.swarms.append(
            SnapSwarm(id=sid, state=state, stats=_record(await redis.hgetall(keys.stats(sid))))
        )
        agent_ids = sorted(_text(a) for a in await redis.smembers(keys.agents(sid)))
        for agent, rec in zip(
            agent_ids, await _hashes(redis, [keys.agent(sid, a) for a in agent_ids]), strict=True
        ):
            if rec:
                doc.agents.append(SnapAgent(swarm=sid, id=agent, record=rec))
        for task, created, rec in await _indexed(
            redis, keys.tasks(sid), lambda t, s=sid: keys.task(s, t)
        ):
            error = None
            if rec.get("dlq_entry"):
                error = await _dlq_error(redis, keys.dlq(sid), rec["dlq_entry"])
            doc.tasks.append(
                SnapTask(swarm=sid, id=task, created_ms=created, record=rec, dlq_error=error)
            )
            size += sum(len(v) for v in rec.values())
            if size > MAX_SNAPSHOT_BYTES:
                raise SnapshotTooLarge(
                    f"the snapshot would exceed {MAX_SNAPSHOT_BYTES} bytes; export one swarm "
                    "at a time (--swarm), or clean old tasks first (`cfnctl task clean`)"
                )
        for run, created, rec in await _indexed(
            redis, keys.runs(sid), lambda r, s=sid: keys.run(s, r)
        ):
            log = await _stream(redis, keys.run_log(sid, run))
            doc.runs.append(SnapRun(swarm=sid, id=run, created_ms=created, record=rec, log=log))
        for epic, created, rec in await _indexed(
            redis, keys.epics(sid), lambda e, s=sid: keys.epic(s, e)
        ):
            doc.epics.append(SnapEpic(swarm=sid, id=epic, created_ms=created, record=rec))
    # Off the event loop: a document of many megabytes takes a while to encode.
    data = await asyncio.to_thread(msgspec.json.encode, doc)
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise SnapshotTooLarge(f"the snapshot is {len(data)} bytes, over {MAX_SNAPSHOT_BYTES}")
    return data


async def _hashes(redis: Any, keys: list[str]) -> list[Record]:
    out: list[Record] = []
    for i in range(0, len(keys), BATCH):
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys[i : i + BATCH]:
                pipe.hgetall(key)
            out += [_record(r) for r in await pipe.execute()]
    return out


async def _indexed(redis: Any, index: str, key_of: Any) -> list[tuple[str, int, Record]]:
    """The members of a zset index (id → created ms) with their hashes, page by page;
    members whose hash is gone are left out."""
    out: list[tuple[str, int, Record]] = []
    for page_no in range(_MAX_PAGES):
        page = await redis.zrange(index, page_no * PAGE, (page_no + 1) * PAGE - 1, withscores=True)
        ids = [(_text(m), int(score)) for m, score in page]
        recs = await _hashes(redis, [key_of(m) for m, _ in ids])
        out += [(m, created, rec) for (m, created), rec in zip(ids, recs, strict=True) if rec]
        if len(page) < PAGE:
            break
    return out


async def _stream(redis: Any, key: str) -> list[SnapStreamEntry]:
    out: list[SnapStreamEntry] = []
    low = "-"
    for _ in range(_MAX_PAGES):
        page = await redis.xrange(key, min=low, max="+", count=PAGE)
        out += [SnapStreamEntry(id=_text(e), fields=_record(f)) for e, f in page]
        if len(page) < PAGE:
            break
        low = f"({_text(page[-1][0])}"
    return out


async def _dlq_error(redis: Any, dlq: str, entry: str) -> str:
    found = await redis.xrange(dlq, min=entry, max=entry, count=1)
    return _text(found[0][1].get(b"error", b"")) if found else ""


# --------------------------------------------------------------------------- import


async def restore(service: SwarmService, doc: Snapshot, rename: str | None) -> SnapshotImportResult:
    """Write the document's swarms (each in one MULTI), refusing any that exists."""
    if rename is not None:
        if len(doc.swarms) != 1:
            raise InvalidArgs(
                f"--swarm renames the snapshot's only swarm, but it has {len(doc.swarms)} "
                f"({', '.join(s.id for s in doc.swarms) or 'none'}); export one swarm to "
                "import it under a new id",
                details={"swarms": [s.id for s in doc.swarms]},
            )
        if not SWARM_ID.match(rename):
            raise InvalidArgs(
                f"swarm id {rename!r}: expected 1-32 of a-z, 0-9, '-', '_' (starting with a "
                "letter or digit)"
            )
    targets = {s.id: rename or s.id for s in doc.swarms}
    redis, keys = service.redis, service.store.keys
    for new in targets.values():  # refuse before writing anything
        leftovers = [keys.swarm_state(new), keys.tasks(new), keys.agents(new), keys.dlq(new)]
        leftovers += [keys.queue(new, p) for p in PRIORITIES]
        hint = "" if rename else ", or import it under a new id with --swarm NEW_ID"
        if await redis.sismember(keys.swarms, new):
            raise Conflict(
                f"swarm {new} already exists; a snapshot never overwrites a swarm "
                f"(destroy it first{hint})",
                details={"swarm": new},
            )
        if await redis.exists(*leftovers):
            raise Conflict(
                f"keys of a former swarm {new} are still in Redis (an interrupted destroy?); "
                f"nothing was imported{hint or ' (choose another id)'}",
                details={"swarm": new},
            )
    result = SnapshotImportResult(upload="", bytes=0, committed=True)
    for swarm in doc.swarms:
        new = targets[swarm.id]
        await _write_swarm(service, doc, swarm, new, result)
        result.swarms.append(new)
        info = await service.info(new)
        if info.status == "active":
            service.resume(info)
    if any(s.state.get("status") not in (None, "active") for s in doc.swarms):
        result.notes.append("swarms that were draining when exported are imported as active")
    result.notes.append(
        "agents are imported as records only: none is running (desired stop); "
        "start new ones with `cfnctl agent create` or `swarm scale`"
    )
    if doc.runs:
        result.notes.append("unfinished CFN-loop runs carry on after the next cfnd restart")
    return result


async def _write_swarm(
    service: SwarmService, doc: Snapshot, swarm: SnapSwarm, new: str, out: SnapshotImportResult
) -> None:
    redis, keys = service.redis, service.store.keys
    old = swarm.id
    now = now_ms()

    def ren(rec: Record) -> Record:
        return rules.rename_record(rec, old, new)

    state = ren(swarm.state)
    state["status"] = "active"
    async with redis.pipeline(transaction=True) as pipe:
        # Streams whose writes below fail on an existing key (a group or an entry id
        # already there): a failed command inside EXEC would not undo the others, so
        # they must be absent, and stay so (watched) until EXEC.
        streams = [keys.queue(new, p) for p in PRIORITIES] + [keys.dlq(new)]
        streams += [keys.run_log(new, r.id) for r in doc.runs if r.swarm == old]
        await pipe.watch(keys.swarms, *streams)
        if await pipe.sismember(keys.swarms, new):
            raise Conflict(f"swarm {new} was created meanwhile; nothing was imported for it")
        if int(await pipe.exists(*streams)):
            raise Conflict(
                f"keys of a former swarm {new} are still in Redis (an interrupted destroy?); "
                "nothing was imported: import under a new id with --swarm NEW_ID",
                details={"swarm": new},
            )
        cap = service.config().limits.max_swarms
        if cap and int(await pipe.scard(keys.swarms)) >= cap:
            raise Conflict(
                f"this daemon already has {cap} swarms (limits.max_swarms); destroy one first",
                details={"max_swarms": cap},
            )
        pipe.multi()
        pipe.hset(keys.swarm_state(new), mapping=state)
        if swarm.stats:
            pipe.hset(keys.stats(new), mapping=swarm.stats)
        for prio in PRIORITIES:  # the dispatcher's groups, before their entries
            pipe.xgroup_create(keys.queue(new, prio), DISPATCH_GROUP, id="0", mkstream=True)
        for agent in (a for a in doc.agents if a.swarm == old):
            pipe.sadd(keys.agents(new), agent.id)
            pipe.hset(
                keys.agent(new, agent.id), mapping=rules.imported_agent(ren(agent.record), now)
            )
            out.agents += 1
        tasks = [t for t in doc.tasks if t.swarm == old]
        # Dead-letter entries keep their ids: added in id order to the new stream.
        for task in sorted(
            (t for t in tasks if t.record.get("dlq_entry")),
            key=lambda t: _id_key(t.record["dlq_entry"]),
        ):
            pipe.xadd(
                keys.dlq(new),
                {"t": task.id, "error": task.dlq_error or ""},
                id=task.record["dlq_entry"],
            )
        for task in tasks:
            rec, requeued = rules.imported_task(ren(task.record))
            stored: dict[str, str | bytes] = dict(rec)
            if rec.get("seal"):
                stored["seal"] = seals.pack(rec["seal"])
            status = rec.get("status", "queued")
            pipe.hset(keys.task(new, task.id), mapping=stored)
            pipe.zadd(keys.tasks(new), {task.id: task.created_ms})
            since = int(rec.get("updated_ms") or task.created_ms or now)
            pipe.zadd(keys.status_index(new, status), {task.id: since})
            if status == "queued":
                prio = rec.get("priority", "normal")
                pipe.xadd(keys.queue(new, prio if prio in PRIORITIES else "normal"), {"t": task.id})
            elif status == "retrying":
                pipe.zadd(keys.delayed(new), {task.id: now})  # due now: its backoff restarts
            if requeued:
                out.requeued.append(task.id)
            out.tasks += 1
        for run in (r for r in doc.runs if r.swarm == old):
            pipe.hset(keys.run(new, run.id), mapping=ren(run.record))
            pipe.zadd(keys.runs(new), {run.id: run.created_ms})
            for entry in run.log:
                pipe.xadd(keys.run_log(new, run.id), ren(entry.fields), id=entry.id)
            out.runs += 1
        for epic in (e for e in doc.epics if e.swarm == old):
            pipe.hset(keys.epic(new, epic.id), mapping=ren(epic.record))
            pipe.zadd(keys.epics(new), {epic.id: epic.created_ms})
            out.epics += 1
        queue_events(
            pipe, keys, new, [("swarm.imported", {"swarm": new, "from": old, "tasks": len(tasks)})]
        )
        pipe.sadd(keys.swarms, new)  # last: the swarm appears whole
        try:
            await pipe.execute()
        except WatchError:
            raise Conflict(
                f"the swarm list (or swarm {new}'s keys) changed while it was imported; "
                "nothing was written for it: run the import again"
            ) from None


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        raise InvalidArgs(f"invalid snapshot: dead-letter entry id {entry_id!r}") from None
