"""Bounded work and bounded state (issue 9, part 7): status from counters, retention by
index ranges, the dispatcher's whole pending list, atomic retry + DLQ cleanup.

Big stores are seeded with one Lua call per batch (as an older cfnd, or cfnd itself,
would have written them), never by running thousands of real tasks.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from cfn_client.api import AsyncClient
from cfn_client.wire.errors import Conflict
from cfn_daemon.store.keys import DISPATCH_CONSUMER, DISPATCH_GROUP, TASK_STATUSES, Keys
from tests.conftest import SHARED_REDIS, DaemonFactory

FAST = {
    "agents.heartbeat_interval_s": 0.2,
    "agents.lapse_s": 3.0,
    "tasks.retry_base_s": 0.05,
    "agents.restart_backoff_s": 0.05,
    "agents.stop_grace_s": 1.0,
}

# Seeds tasks as stored records: hash + the creation index; with ARGV[6] == '1' also
# their status index (what cfnd's scripts write), else none (an older cfnd).
SEED = """
local prefix, swarm, status, n, first = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local base = prefix .. ':{' .. swarm .. '}:'
local ts = tonumber(ARGV[7])
for i = 1, n do
  local tid = first .. i
  redis.call('HSET', base .. 'task:' .. tid, 'id', tid, 'swarm', swarm, 'text', 'echo ' .. i,
    'type', 'shell', 'priority', 'normal', 'status', status, 'attempts', '1',
    'max_attempts', '3', 'created_ms', ts, 'updated_ms', ts, 'context', '{}',
    'result', ARGV[8])
  redis.call('ZADD', base .. 'tasks', ts, tid)
  if ARGV[6] == '1' then redis.call('ZADD', base .. 'st:' .. status, ts, tid) end
end
return n
"""
OUTPUT_10K = '{"ok":true,"agent":"a","attempt":1,"output":"' + "x" * 10_000 + '"}'


@pytest.fixture
async def raw(key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(SHARED_REDIS)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{key_prefix}:*", count=1000)]
    for i in range(0, len(keys), 1000):
        await client.unlink(*keys[i : i + 1000])
    await client.aclose()


async def seed_swarm(raw: aioredis.Redis, prefix: str, swarm: str, *, indexed: bool) -> None:
    keys = Keys(prefix)
    state = {
        "id": swarm, "name": swarm, "topology": "mesh", "strategy": "balanced",
        "max_agents": "4", "status": "active", "created_ms": str(int(time.time() * 1000)),
    }  # fmt: skip
    if indexed:
        state["task_index"] = "1"
    await raw.hset(keys.swarm_state(swarm), mapping=state)
    await raw.sadd(keys.swarms, swarm)


async def seed_tasks(
    raw: aioredis.Redis,
    prefix: str,
    swarm: str,
    status: str,
    n: int,
    *,
    first: str,
    indexed: bool,
    at_ms: int | None = None,
    result: str = "",
) -> None:
    ts = at_ms if at_ms is not None else int(time.time() * 1000)
    for start in range(0, n, 5000):  # a few short script calls, not one long one
        await raw.eval(  # type: ignore[misc]
            SEED, 0, prefix, swarm, status, min(5000, n - start), f"{first}{start}-",
            "1" if indexed else "0", ts, result,
        )  # fmt: skip


async def stored_statuses(raw: aioredis.Redis, prefix: str, swarm: str) -> Counter[str]:
    """The brute-force truth: every task hash's status."""
    keys = Keys(prefix)
    ids = [t.decode() for t in await raw.zrange(keys.tasks(swarm), 0, -1)]
    async with raw.pipeline(transaction=False) as pipe:
        for tid in ids:
            pipe.hget(keys.task(swarm, tid), "status")
        return Counter(s.decode() for s in await pipe.execute() if s)


async def index_sizes(raw: aioredis.Redis, prefix: str, swarm: str) -> Counter[str]:
    keys = Keys(prefix)
    out: Counter[str] = Counter()
    for status in TASK_STATUSES:
        n = await raw.zcard(keys.status_index(swarm, status))
        if n:
            out[status] = n
    return out


async def test_status_counts_are_exact_past_10k_tasks_of_an_older_cfnd(
    daemon_factory: DaemonFactory, raw: aioredis.Redis, key_prefix: str
) -> None:
    # 20k tasks with 10 kB outputs, written by a cfnd that kept no status indexes.
    await seed_swarm(raw, key_prefix, "big", indexed=False)
    await seed_tasks(raw, key_prefix, "big", "succeeded", 15_000, first="s", indexed=False,
                     result=OUTPUT_10K)  # fmt: skip
    await seed_tasks(raw, key_prefix, "big", "failed", 5_000, first="f", indexed=False)
    d = await daemon_factory(**FAST)
    await asyncio.wait_for(d.swarms.ready.wait(), 60)  # resumed: indexes rebuilt once
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        started = time.perf_counter()
        for _ in range(20):
            status = await cfn.call("swarm.status", swarm="big")
        took_ms = (time.perf_counter() - started) / 20 * 1000
        # Before: scanned the newest 10,000 hashes (2.4 s), reporting at most 10,000.
        assert status.tasks == {"succeeded": 15_000, "failed": 5_000}
        print(f"swarm.status with 20k stored tasks: {took_ms:.1f} ms per call")
        assert took_ms < 500  # O(1); the scan took seconds (generous bound for a busy box)
        page = await cfn.call("task.list", swarm="big", status="failed", limit=10)
        assert [t.status for t in page.tasks] == ["failed"] * 10


async def test_indexes_follow_every_transition_and_retry_is_atomic(
    daemon_factory: DaemonFactory, raw: aioredis.Redis, key_prefix: str
) -> None:
    d = await daemon_factory(**FAST)
    keys = Keys(key_prefix)
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=2, name="life")
        ok = await cfn.call("task.submit", text="echo fine")
        bad = await cfn.call("task.submit", text="exit 3", max_attempts=2)
        done = await cfn.call("task.wait", tasks=[ok.id, bad.id], timeout_s=60)
        assert {t.id: t.status for t in done.tasks} == {ok.id: "succeeded", bad.id: "failed"}
        assert await raw.xlen(keys.dlq("life")) == 1
        # A queued task cannot be retried: requeue.lua answers an error, not "queued".
        blocked = await cfn.call("task.submit", text="sleep 30")
        await cfn.call("task.cancel", task=blocked.id)
        waiting = await d.swarms.tasks.submit("life", text="sleep 1", type="nosuch-type")
        with pytest.raises(Conflict, match="only failed or cancelled"):
            await cfn.call("task.retry", task=waiting.id)
        assert (await cfn.call("task.status", task=waiting.id)).status == "queued"
        # Retrying the dead task drops its DLQ entry in the same script.
        again = await cfn.call("task.retry", task=bad.id)
        assert again.status == "queued"
        assert await raw.xlen(keys.dlq("life")) == 0
        assert (await cfn.call("dlq.list")).tasks == []
        final = await cfn.call("task.wait", tasks=[bad.id], timeout_s=60)
        assert final.tasks[0].status == "failed"
        truth = await stored_statuses(raw, key_prefix, "life")
        assert await index_sizes(raw, key_prefix, "life") == truth
        assert (await cfn.call("swarm.status")).tasks == dict(truth)
        assert truth == {"succeeded": 1, "failed": 1, "cancelled": 1, "queued": 1}


async def test_retention_pages_through_index_ranges_and_rechecks(
    daemon_factory: DaemonFactory, raw: aioredis.Redis, key_prefix: str
) -> None:
    day_ago = int(time.time() * 1000) - 86_400_000
    await seed_swarm(raw, key_prefix, "old", indexed=True)
    # 12k old finished tasks: more than the 10,000 the old scan ever looked at, and the
    # oldest ones (which that newest-first scan never reached).
    await seed_tasks(raw, key_prefix, "old", "succeeded", 12_000, first="o", indexed=True,
                     at_ms=day_ago)  # fmt: skip
    await seed_tasks(raw, key_prefix, "old", "succeeded", 3, first="new", indexed=True)
    keys = Keys(key_prefix)
    # A task the index still lists as finished long ago, but that was retried since:
    # the deleting script re-checks and keeps it.
    await raw.hset(keys.task("old", "o0-1"), "status", "queued")
    d = await daemon_factory(**FAST)
    await asyncio.wait_for(d.swarms.ready.wait(), 60)
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        removed = await cfn.call("task.clean", swarm="old", older_than_s=3600)
        assert removed.count == 11_999
        assert await raw.exists(keys.task("old", "o0-1")) == 1
        assert await raw.zscore(keys.status_index("old", "succeeded"), "o0-1") is None
        assert await raw.zcard(keys.tasks("old")) == 4
        assert (await cfn.call("swarm.status", swarm="old")).tasks == {"succeeded": 3}


async def test_dispatcher_reclaims_its_whole_pending_list_after_a_restart(
    daemon_factory: DaemonFactory, raw: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    await seed_swarm(raw, key_prefix, "pel", indexed=False)
    await seed_tasks(raw, key_prefix, "pel", "queued", 1_200, first="q", indexed=False)
    queue = keys.queue("pel", "normal")
    await raw.xgroup_create(queue, DISPATCH_GROUP, id="0", mkstream=True)
    async with raw.pipeline(transaction=False) as pipe:
        for i in range(1_200):
            pipe.xadd(queue, {"t": f"q{i // 5000 * 5000}-{i % 5000 + 1}"})
        await pipe.execute()
    # A cfnd read them all (its pending list) and died before assigning any.
    read = await raw.xreadgroup(DISPATCH_GROUP, DISPATCH_CONSUMER, {queue: ">"}, count=5000)
    assert len(read[0][1]) == 1_200
    d = await daemon_factory(**FAST)
    await asyncio.wait_for(d.swarms.ready.wait(), 60)
    rt = d.swarms.runtimes["pel"]
    # Before: one XREADGROUP ... 0 of 500; entries 501+ were orphaned.
    for _ in range(600):  # there are no agents: everything stays in the backlog
        if len(rt.dispatcher.backlog) >= 1_200:
            break
        await asyncio.sleep(0.05)
    assert len(rt.dispatcher.backlog) == 1_200


SEED_AGENTS = """
local prefix, swarm, n, status, gone = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local base = prefix .. ':{' .. swarm .. '}:'
for i = 1, n do
  local id = ARGV[6] .. i
  redis.call('SADD', base .. 'agents', id)
  redis.call('HSET', base .. 'agent:' .. id, 'id', id, 'swarm', swarm, 'type', 'shell',
    'role', 'implementer', 'status', status, 'gone_ms', gone, 'started_ms', '1')
  redis.call('HSET', base .. 'tokens', id, 'secret')
  redis.call('XADD', base .. 'inbox:' .. id, '*', 'm', 'hello')
end
return n
"""


async def test_dead_agents_and_old_dead_letters_are_forgotten(
    daemon_factory: DaemonFactory, raw: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    now = int(time.time() * 1000)
    await seed_swarm(raw, key_prefix, "churn", indexed=True)
    # 5,000 agents lost two hours ago (they cost every dispatch pass a read each).
    await raw.eval(SEED_AGENTS, 0, key_prefix, "churn", 5000, "lost", now - 7_200_000, "old-")  # type: ignore[misc]
    await raw.eval(SEED_AGENTS, 0, key_prefix, "churn", 3, "failed", now - 60_000, "recent-")  # type: ignore[misc]
    # A DLQ over its cap, with entries older than the retention.
    async with raw.pipeline(transaction=False) as pipe:
        for i in range(300):
            pipe.xadd(
                keys.dlq("churn"), {"t": f"gone{i}", "error": "x"}, id=f"{now - 90_000_000 + i}-0"
            )
        for i in range(300):
            pipe.xadd(keys.dlq("churn"), {"t": f"dead{i}", "error": "x"})
        await pipe.execute()
    d = await daemon_factory(
        **FAST, **{"tasks.dlq_max_entries": 200, "tasks.retention_s": 86_400.0}
    )
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        async with cfn.events_follow(swarm="churn", since_ms=0, types=["agent.forgotten"]) as ev:
            async for event in ev:
                assert event.data["count"] == 5000
                break
        assert await raw.scard(keys.agents("churn")) == 3
        assert await raw.hlen(keys.tokens("churn")) == 3
        assert await raw.exists(keys.inbox("churn", "old-1")) == 0
        agents = (await cfn.call("agent.list", swarm="churn")).agents
        assert sorted(a.id for a in agents) == ["recent-1", "recent-2", "recent-3"]
        # Trimmed by count (approximately: whole stream nodes) and by age.
        dlq = await raw.xrange(keys.dlq("churn"))
        assert len(dlq) <= 300
        assert all(f[b"t"].startswith(b"dead") for _, f in dlq)


async def test_concurrent_spawns_never_pass_max_agents(daemon_factory: DaemonFactory) -> None:
    d = await daemon_factory(**FAST)
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=3, name="room")
        # Before: each request checked the room, then spawned; all of them passed.
        outcomes = await asyncio.gather(
            *(cfn.call("agent.create", type="shell") for _ in range(8)), return_exceptions=True
        )
        made = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(made) == 3 and len(refused) == 5, outcomes
        assert all("at most 3 agents" in str(e) for e in refused)
        assert len((await cfn.call("agent.list")).agents) == 3
        await cfn.call("swarm.init", topology="mesh", max_agents=5, name="auto")
        # Submits on a swarm with no agent start one worker, not one per submit.
        await asyncio.gather(
            *(cfn.call("task.submit", swarm="auto", text="true") for _ in range(10))
        )
        assert len((await cfn.call("agent.list", swarm="auto")).agents) == 1


async def test_finished_runs_and_epics_expire_with_their_logs_and_votes(
    daemon_factory: DaemonFactory, raw: aioredis.Redis, key_prefix: str
) -> None:
    import msgspec

    from cfn_client.wire.schema.workflow import EpicSpec, PhaseSpec
    from cfn_daemon.core import loop

    keys = Keys(key_prefix)
    now = int(time.time() * 1000)
    old = now - 7_200_000
    await seed_swarm(raw, key_prefix, "runs", indexed=True)

    async def seed_run(run_id: str, updated_ms: int, status: str, **extra: str) -> None:
        state = loop.RunState(run_id=run_id, task="t", implementers=["i"], validators=["v"],
                              status=status, loop2_round=2, phase=extra.pop("phase", None))  # type: ignore[arg-type]  # fmt: skip
        await raw.hset(keys.run("runs", run_id), mapping={
            "state": msgspec.json.encode(state), "status": status, "created_ms": updated_ms,
            "updated_ms": updated_ms, **extra})  # fmt: skip
        await raw.zadd(keys.runs("runs"), {run_id: updated_ms})
        await raw.xadd(keys.run_log("runs", run_id), {"seq": 1})
        await raw.xadd(keys.votes("runs", run_id, 2), {"v": "x"})

    await seed_run("run-old", old, "done")
    await seed_run("run-recent", now, "done")
    await seed_run("run-going", old, "loop2")
    await seed_run("run-ep", old, "done", phase="p", epic="epic-old")
    spec = EpicSpec(name="e", phases=[PhaseSpec(name="p")])
    await raw.hset(keys.epic("runs", "epic-old"),
                   mapping={"spec": msgspec.json.encode(spec), "created_ms": old,
                            "phase:p": "run-ep"})  # fmt: skip
    await raw.zadd(keys.epics("runs"), {"epic-old": old})
    d = await daemon_factory(**FAST, **{"loop.run_retention_s": 3600.0})
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        seen: set[str] = set()
        follow = cfn.events_follow(swarm="runs", since_ms=0, types=["loop.expired", "epic.expired"])
        async with follow as events:
            async for ev in events:
                seen.add(ev.data.get("run") or ev.data["epic"])
                if seen >= {"run-old", "epic-old"}:
                    break
    assert seen == {"run-old", "epic-old"}
    left = {r.decode() for r in await raw.zrange(keys.runs("runs"), 0, -1)}
    assert left == {"run-recent", "run-going"}
    for gone in ("run-old", "run-ep"):
        assert not await raw.exists(keys.run("runs", gone), keys.run_log("runs", gone),
                                    keys.votes("runs", gone, 2))  # fmt: skip
    assert not await raw.exists(keys.epic("runs", "epic-old"))
