"""Swarms of real cfn-agent processes against a real Redis: delivery, crashes, topologies."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cfn_client.api import AsyncClient
from cfn_client.wire.errors import Conflict, InvalidArgs, NotFound
from cfn_client.wire.schema.swarm import Event, TaskInfo
from cfn_daemon.app import Daemon
from cfn_daemon.core import topology
from tests.conftest import DaemonFactory
from tests.redis_servers import pid_alive

HEARTBEAT_S = 0.2
# The lapse is counted in missed heartbeats, never a fixed second count: on a loaded
# 2-core machine a healthy agent's beat can be seconds late, and a lapse of a few
# beats gets it killed as hung. Tests that wait for a real lapse (a killed remote
# agent) or must outlast one (a slow task) derive their bounds from these numbers.
LAPSE_BEATS = 25
LAPSE_S = HEARTBEAT_S * LAPSE_BEATS
FAST = {
    "agents.heartbeat_interval_s": HEARTBEAT_S,
    "agents.lapse_s": LAPSE_S,
    "tasks.retry_base_s": 0.05,
    "agents.restart_backoff_s": 0.05,
    "agents.stop_grace_s": 1.0,
}


@pytest.fixture
async def d(daemon_factory: DaemonFactory) -> Daemon:
    return await daemon_factory(**FAST)


@pytest.fixture
async def cfn(d: Daemon) -> AsyncIterator[AsyncClient]:
    # pytest-asyncio runs setup and teardown in different tasks, and anyio requires a
    # client's task group to be entered and left by the same task: one task owns it.
    ready: asyncio.Future[AsyncClient] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def owner() -> None:
        async with AsyncClient(d.socket_path, timeout_s=60) as client:
            ready.set_result(client)
            await done.wait()

    task = asyncio.create_task(owner())
    yield await ready
    done.set()
    await task


async def wait_tasks(cfn: AsyncClient, ids: list[str], timeout_s: float = 60) -> list[TaskInfo]:
    result = await cfn.call("task.wait", tasks=ids, timeout_s=timeout_s)
    return list(result.tasks)


async def all_events(cfn: AsyncClient, types: list[str] | None = None) -> list[Event]:
    return list((await cfn.call("events.list", types=types or [], limit=100_000)).events)


def started_signal(tmp_path: Path) -> tuple[Path, str]:
    """A FIFO a task writes to once its process really runs (``task.started`` comes
    just before the agent spawns it), and the shell snippet that writes to it."""
    fifo = tmp_path / "started.fifo"
    os.mkfifo(fifo)
    return fifo, f"echo go > {fifo}"


async def until_running(fifo: Path) -> None:
    await asyncio.wait_for(asyncio.to_thread(fifo.read_text), 30)


async def wait_idle(cfn: AsyncClient, count: int, agent: str | None = None) -> None:
    """Until ``count`` agents (or ``agent``) are registered and idle. Subscribes first,
    then checks, then re-checks on every agent event: nothing can slip in between."""

    async def ready() -> bool:
        agents = (await cfn.call("agent.list")).agents
        idle = [a for a in agents if a.status == "idle" and agent in (None, a.id)]
        return len(idle) >= count

    async with cfn.events_follow(types=["agent"]) as events:
        if await ready():
            return
        async for _ in events:
            if await ready():
                return


async def next_event(events: Any, etype: str, **match: Any) -> Event:
    async for ev in events:
        if ev.type == etype and all(ev.data.get(k) == v for k, v in match.items()):
            return ev
    raise AssertionError(f"stream ended before {etype}")


async def test_four_command_agents_process_200_tasks_exactly_once(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    # A `command` agent type: argv template, no shell in between, task text as {task}.
    config = (
        "[agent_types.worker]\n"
        'kind = "command"\n'
        f'exec = ["sh", "-c", "echo $CFN_TASK_ID >> $1; echo out-$2", "sh", "{log}", "{{task}}"]\n'
    )
    d = await daemon_factory(config_text=config, **FAST)
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await _two_hundred(cfn, log)


async def _two_hundred(cfn: AsyncClient, log: Path) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=4, name="crowd")
    await cfn.call("agent.create", type="worker", count=4)
    ids = []
    for i in range(200):
        task = await cfn.call("task.submit", text=str(i), type="worker")
        ids.append(task.id)
    tasks = await wait_tasks(cfn, ids)
    assert [t.status for t in tasks] == ["succeeded"] * 200
    assert {t.result.output.strip() for t in tasks} == {f"out-{i}" for i in range(200)}
    runs = Counter(log.read_text().split())
    assert set(runs) == set(ids)
    assert max(runs.values()) == 1  # no task ran twice
    done = Counter(e.data["task"] for e in await all_events(cfn, ["task.succeeded"]))
    assert done == Counter(ids)  # exactly one result per task
    workers = {t.agent for t in tasks}
    assert len(workers) == 4  # the work was spread over every agent


async def test_killed_agent_task_is_redelivered_once(cfn: AsyncClient, tmp_path: Path) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=4, name="crash")
    await cfn.call("agent.create", type="shell", count=2)
    marker = tmp_path / "attempts"
    fifo, signal_running = started_signal(tmp_path)
    text = (
        f'echo x >> {marker}; [ "$(wc -l < {marker})" -ge 2 ] || '
        f"{{ {signal_running}; sleep 30; }}; echo done"
    )
    async with cfn.events_follow(types=["task", "agent"]) as events:
        task = await cfn.call("task.submit", text=text)
        started = await next_event(events, "task.started", task=task.id)
        await until_running(fifo)
        victim = started.data["agent"]
        info = await cfn.call("agent.status", agent=victim)
        os.killpg(info.pid, signal.SIGKILL)
        replaced = await next_event(events, "agent.replaced", agent=victim)
    (final,) = await wait_tasks(cfn, [task.id])
    assert final.status == "succeeded"
    assert final.agent != victim
    assert final.attempts == 2
    assert final.result.output.strip() == "done"
    succeeded = [e for e in await all_events(cfn, ["task.succeeded"]) if e.data["task"] == task.id]
    assert len(succeeded) == 1
    lost = [e for e in await all_events(cfn, ["agent.failed"]) if e.data["agent"] == victim]
    assert lost and task.id in lost[0].data["requeued"]
    # The dead agent was replaced.
    agents = {a.id: a for a in (await cfn.call("agent.list")).agents}
    assert agents[victim].status == "failed"
    assert agents[replaced.data["replacement"]].status in ("starting", "idle", "busy")


async def test_slow_heartbeating_agent_keeps_its_task(d: Daemon, cfn: AsyncClient) -> None:
    lapse_s = d.settings.agents.lapse_s  # as cfnd runs it, not as this module meant it
    await cfn.call("swarm.init", topology="mesh", max_agents=3, name="slow")
    await cfn.call("agent.create", type="shell", count=2)
    # Runs 1.5x the lapse; the agent heartbeats meanwhile so nobody takes it away.
    task = await cfn.call("task.submit", text=f"sleep {lapse_s * 1.5:g}; echo slow-but-alive")
    (final,) = await wait_tasks(cfn, [task.id])
    assert final.status == "succeeded"
    assert final.attempts == 1
    assert final.result.duration_ms > lapse_s * 1000  # it really outlasted a lapse
    assert not await all_events(cfn, ["task.requeued"])
    assert not await all_events(cfn, ["agent.failed", "agent.lost"])


async def test_failing_task_retries_with_backoff_then_dead_letters(cfn: AsyncClient) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=2, name="dlq")
    task = await cfn.call("task.submit", text="echo nope >&2; exit 3", max_attempts=3)
    (final,) = await wait_tasks(cfn, [task.id])
    assert final.status == "failed"
    assert final.attempts == 3
    assert final.result.exit_code == 3
    assert "nope" in final.result.stderr
    retries = list(await all_events(cfn, ["task.retrying"]))
    assert [e.data["attempt"] for e in retries] == [1, 2]
    assert retries[1].data["delay_ms"] == 2 * retries[0].data["delay_ms"]  # exponential
    dlq = (await cfn.call("dlq.list")).tasks
    assert [t.id for t in dlq] == [task.id]
    assert (await cfn.call("dlq.requeue", task=task.id)).count == 1
    assert (await cfn.call("dlq.list")).tasks == []


async def test_cancel_stops_a_running_task(cfn: AsyncClient) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=2, name="cancel")
    async with cfn.events_follow(types=["task"]) as events:
        task = await cfn.call("task.submit", text="sleep 60")
        await next_event(events, "task.started", task=task.id)
        await cfn.call("task.cancel", task=task.id)
        await next_event(events, "task.cancelled", task=task.id)
    (final,) = await wait_tasks(cfn, [task.id])
    assert final.status == "cancelled"


async def test_a_task_cancelled_before_its_agent_started_it_frees_the_agent(
    d: Daemon, cfn: AsyncClient
) -> None:
    # Assigned (the agent's load counts it), then cancelled while the agent is frozen:
    # the agent skips it when it wakes, and its slot must be free again. A leaked load
    # left the agent "full" for good, and every later task pinned to it waited forever.
    await cfn.call("swarm.init", topology="mesh", max_agents=2, name="cancelq")
    (agent,) = (await cfn.call("agent.create", type="shell")).agents
    first = await cfn.call("task.submit", text="true")
    assert (await wait_tasks(cfn, [first.id]))[0].status == "succeeded"  # it takes work
    assert agent.pid is not None
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        async with cfn.events_follow(types=["task"]) as events:
            task = await cfn.call("task.submit", text="true")
            await next_event(events, "task.assigned", task=task.id)
            await cfn.call("task.cancel", task=task.id)
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    after = await cfn.call("task.submit", text="echo again")
    (final,) = await wait_tasks(cfn, [after.id], timeout_s=20)
    assert (final.status, final.result and final.result.agent) == ("succeeded", agent.id)
    load = await d.store.redis.hget(d.store.keys.agent("cancelq", agent.id), "load")
    assert int(load) == 0


async def test_priorities_high_before_low(cfn: AsyncClient, tmp_path: Path) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=2, name="prio")
    order = tmp_path / "order"
    # A single agent, held busy while the queue fills up.
    gate = tmp_path / "gate"
    await cfn.call("agent.create", type="shell")
    async with cfn.events_follow(types=["task"]) as events:
        blocker = await cfn.call("task.submit", text=f"while [ ! -e {gate} ]; do sleep 0.05; done")
        await next_event(events, "task.started", task=blocker.id)
    ids = [blocker.id]
    for prio in ("low", "normal", "high", "low", "high"):
        t = await cfn.call("task.submit", text=f"echo {prio} >> {order}", priority=prio)
        ids.append(t.id)
    gate.touch()
    await wait_tasks(cfn, ids)
    assert order.read_text().split() == ["high", "high", "normal", "low", "low"]


@pytest.mark.parametrize(
    ("payload", "error", "fragment"),
    [
        ({"topology": "cube", "max_agents": 4}, InvalidArgs, "Invalid enum value 'cube'"),
        ({"topology": "mesh", "max_agents": 1}, InvalidArgs, "between 2 and 50, got 1"),
        ({"topology": "mesh", "max_agents": 51}, InvalidArgs, "between 2 and 50, got 51"),
        ({"topology": "mesh", "max_agents": 4, "name": "Bad Name"}, InvalidArgs, "swarm name"),
    ],
)
async def test_bad_swarm_init_changes_nothing(
    d: Daemon, cfn: AsyncClient, payload: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    before = await snapshot(d)
    audited = await d.store.redis.xlen(d.store.keys.audit)
    with pytest.raises(error, match=fragment):
        await cfn.call("swarm.init", **payload)
    assert await snapshot(d) == before
    # The one write a refused request may make: its audit entry (arguments that do not
    # even decode are refused before the op, and audit, are reached).
    added = (await d.store.redis.xrange(d.store.keys.audit, count=audited + 2))[audited:]
    assert len(added) <= 1
    assert all(e[b"op"] == b"swarm.init" and e[b"outcome"] == b"error" for _, e in added)


async def test_unknown_ids_are_specific_errors(d: Daemon, cfn: AsyncClient) -> None:
    await cfn.call("swarm.init", topology="ring", max_agents=3, name="ids")
    before = await snapshot(d)
    with pytest.raises(NotFound, match="no agent 'ghost'"):
        await cfn.call("agent.status", agent="ghost")
    with pytest.raises(NotFound, match="no task 'nope'"):
        await cfn.call("task.status", task="nope")
    with pytest.raises(NotFound, match="no task 'nope'"):
        await cfn.call("task.wait", tasks=["nope"])
    with pytest.raises(NotFound, match="no swarm 'missing'"):
        await cfn.call("swarm.destroy", swarm="missing")
    with pytest.raises(InvalidArgs, match="unknown agent type 'wizard'"):
        await cfn.call("task.submit", text="x", type="wizard")
    assert await snapshot(d) == before


async def snapshot(d: Daemon) -> dict[bytes, Any]:
    """Every key under the daemon's prefix with a type-specific digest of its content
    (but the audit stream, whose job is to record even refused requests)."""
    redis = d.store.redis
    out: dict[bytes, Any] = {}
    async for key in redis.scan_iter(match=f"{d.store.keys.prefix}:*"):
        if key == d.store.keys.audit.encode():
            continue
        kind = await redis.type(key)
        if kind == b"hash":
            out[key] = await redis.hgetall(key)
        elif kind == b"set":
            out[key] = await redis.smembers(key)
        elif kind == b"stream":
            out[key] = await redis.xlen(key)
        else:
            out[key] = kind
    return out


async def test_remote_agent_joins_and_receives_work(d: Daemon, cfn: AsyncClient) -> None:
    await cfn.call("swarm.init", topology="star", max_agents=4, name="remote")
    url = d.store.params
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFN_")}
    redis_url = (
        f"unix://{url.unix_socket_path}?db={url.db}"
        if url.unix_socket_path
        else f"redis://{url.host}:{url.port}/{url.db}"
    )
    from cfn_daemon.swarm.supervisor import agent_command

    proc = await asyncio.create_subprocess_exec(
        *agent_command(),
        "--redis",
        redis_url,
        "--swarm",
        "remote",
        "--type",
        "shell",
        "--id",
        "far-away",
        "--key-prefix",
        d.store.keys.prefix,
        "--heartbeat-s",
        str(HEARTBEAT_S),
        env=env,
    )
    try:
        await wait_idle(cfn, 1, agent="far-away")
        task = await cfn.call("task.submit", text="echo served-remotely")
        (final,) = await wait_tasks(cfn, [task.id])
        assert final.agent == "far-away"
        assert final.result.output.strip() == "served-remotely"
        agent = await cfn.call("agent.status", agent="far-away")
        assert agent.local is False
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert (await cfn.call("agent.status", agent="far-away")).status == "stopped"


async def test_star_routes_messages_through_the_hub_and_assigns_via_it(cfn: AsyncClient) -> None:
    await cfn.call("swarm.init", topology="star", max_agents=4, name="star")
    created = (await cfn.call("agent.create", type="shell", count=3)).agents
    await wait_idle(cfn, 3)
    agents = [a.id for a in (await cfn.call("agent.list")).agents]
    hub = agents[0]
    reply = await cfn.call("agent.send", from_agent=agents[1], to_agent=agents[2], message="hi")
    assert [d.path for d in reply.deliveries] == [[agents[1], hub, agents[2]]]
    sent = (await all_events(cfn, ["message.sent"]))[-1]
    assert sent.data["deliveries"][0]["path"] == [agents[1], hub, agents[2]]
    task = await cfn.call("task.submit", text="echo via-hub")
    await wait_tasks(cfn, [task.id])
    assigned = [e for e in await all_events(cfn, ["task.assigned"]) if e.data["task"] == task.id]
    assert assigned[0].data["via"] == hub
    assert assigned[0].data["agents"] != [hub]  # spokes work first, the hub coordinates
    assert {a.id for a in created} == set(agents)


async def test_ring_passes_the_work_token_in_order(cfn: AsyncClient) -> None:
    await cfn.call("swarm.init", topology="ring", max_agents=3, name="ring")
    await cfn.call("agent.create", type="shell", count=3)
    await wait_idle(cfn, 3)
    ring = [a.id for a in (await cfn.call("agent.list")).agents]
    ids = []
    for i in range(6):
        ids.append((await cfn.call("task.submit", text=f"echo {i}")).id)
        await wait_tasks(cfn, ids[-1:])
    order = [t.agent for t in await wait_tasks(cfn, ids)]
    start = ring.index(order[0])
    assert order == [ring[(start + i) % 3] for i in range(6)]
    broadcast = await cfn.call("swarm.broadcast", message="all", from_agent=ring[0])
    assert [d.path for d in broadcast.deliveries] == [ring[:2], ring]


async def test_hierarchical_and_mesh_broadcast_reach_everyone_once(cfn: AsyncClient) -> None:
    await cfn.call("swarm.init", topology="hierarchical", max_agents=6, name="tree")
    await cfn.call("agent.create", type="shell", count=6)
    await wait_idle(cfn, 6)
    members = [a.id for a in (await cfn.call("agent.list")).agents]
    reply = await cfn.call("swarm.broadcast", message="hello tree")
    assert sorted(d.to for d in reply.deliveries) == sorted(members)
    root = members[0]
    assert all(d.path[0] == root for d in reply.deliveries)
    leaf_route = await cfn.call(
        "agent.send", from_agent=members[5], to_agent=members[1], message="up and down"
    )
    path = leaf_route.deliveries[0].path
    assert path[0] == members[5]
    assert path[-1] == members[1]
    tree = topology.layout("hierarchical", [topology.Member(id=m) for m in members])
    assert all(frozenset(hop) in tree.edges() for hop in itertools.pairwise(path))
    assert len(path) > 2  # two leaves talk through their parent(s), never directly
    for d in reply.deliveries:
        assert all(frozenset(hop) in tree.edges() for hop in zip(d.path, d.path[1:], strict=False))


async def test_reliability_strategy_replicates_and_keeps_one_result(
    cfn: AsyncClient, tmp_path: Path
) -> None:
    await cfn.call(
        "swarm.init", topology="mesh", max_agents=3, strategy="reliability", name="twice"
    )
    await cfn.call("agent.create", type="shell", count=2)
    await wait_idle(cfn, 2)
    lock = tmp_path / "lock"
    # The replica that gets the lock answers at once; the other would work for 30 s.
    text = f"mkdir {lock} 2>/dev/null && echo replicated || sleep 30"
    async with cfn.events_follow(types=["task"]) as events:
        task = await cfn.call("task.submit", text=text)
        assigned = await next_event(events, "task.assigned", task=task.id)
        assert len(assigned.data["agents"]) == 2  # both replicas run...
        await next_event(events, "task.succeeded", task=task.id)
        # ...and the loser is stopped, its late result not stored.
        loser = await next_event(events, "task.duplicate", task=task.id)
    assert loser.data["error"] == "cancelled"
    assert loser.data["duration_ms"] < 10_000
    (final,) = await wait_tasks(cfn, [task.id])
    assert final.status == "succeeded"
    assert final.result.output.strip() == "replicated"
    succeeded = [e for e in await all_events(cfn, ["task.succeeded"]) if e.data["task"] == task.id]
    assert len(succeeded) == 1  # exactly one result was kept


async def test_balanced_strategy_prefers_the_least_loaded_agent(cfn: AsyncClient) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=3, name="balance")
    await cfn.call("agent.create", type="shell", count=2)
    await wait_idle(cfn, 2)
    async with cfn.events_follow(types=["agent", "task"]) as events:
        long = await cfn.call("task.submit", text="sleep 2")
        busy = (await next_event(events, "task.started", task=long.id)).data["agent"]
        ids = [(await cfn.call("task.submit", text="echo quick")).id for _ in range(3)]
        tasks = await wait_tasks(cfn, ids)
    assert busy not in {t.agent for t in tasks}  # the idle agent took every quick task


async def test_scale_up_and_down_never_stops_a_busy_agent_without_force(
    cfn: AsyncClient,
) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=4, name="scale")
    up = await cfn.call("swarm.scale", agents=3)
    assert len(up.spawned) == 3
    await wait_idle(cfn, 3)
    async with cfn.events_follow(types=["agent", "task"]) as events:
        long = await cfn.call("task.submit", text="sleep 30")
        busy = (await next_event(events, "task.started", task=long.id)).data["agent"]
        down = await cfn.call("swarm.scale", agents=1)
        assert busy not in down.stopping  # idle ones go first
        assert len(down.stopping) == 2
        with pytest.raises(Conflict, match="would stop busy agents"):
            await cfn.call("swarm.scale", agents=0)
        await cfn.call("swarm.scale", agents=0, force=True)
        await next_event(events, "task.requeued", task=long.id)  # handed back, not lost
    # Above the cap raises it (tests/test_cli_spellings.py), up to 50 agents.
    with pytest.raises(InvalidArgs, match=r"scale target 51: a swarm has at most 50 agents"):
        await cfn.call("swarm.scale", agents=51)


async def test_destroy_stops_agents_and_deletes_every_key(d: Daemon, cfn: AsyncClient) -> None:
    await cfn.call("swarm.init", topology="star", max_agents=3, name="doomed")
    await cfn.call("agent.create", type="shell", count=2)
    task = await cfn.call("task.submit", text="echo bye")
    await wait_tasks(cfn, [task.id])
    pids = [a.pid for a in (await cfn.call("agent.list")).agents]
    result = await cfn.call("swarm.destroy")
    assert len(result.stopped_agents) == 2
    assert (await cfn.call("swarm.list")).swarms == []
    assert not [
        k async for k in d.store.redis.scan_iter(match=f"{d.store.keys.prefix}:{{doomed}}*")
    ]
    for pid in pids:
        assert not pid_alive(pid)
    with pytest.raises(NotFound):
        await cfn.call("swarm.status", swarm="doomed")


async def test_lapsed_remote_agent_is_marked_lost_and_its_task_requeued(
    d: Daemon, cfn: AsyncClient, tmp_path: Path
) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=3, name="lost")
    from cfn_daemon.swarm.agent_login import agent_redis_url
    from cfn_daemon.swarm.supervisor import agent_command

    env = {k: v for k, v in os.environ.items() if not k.startswith("CFN_")}
    proc = await asyncio.create_subprocess_exec(
        *agent_command(),
        "--redis",
        agent_redis_url(d.store),
        "--swarm",
        "lost",
        "--type",
        "shell",
        "--id",
        "remote-1",
        "--key-prefix",
        d.store.keys.prefix,
        "--heartbeat-s",
        str(HEARTBEAT_S),
        env=env,
        start_new_session=True,
    )
    marker = tmp_path / "first"
    fifo, signal_running = started_signal(tmp_path)
    text = (
        f"if [ -e {marker} ]; then echo second-try; "
        f"else touch {marker}; {signal_running}; sleep 30; fi"
    )
    await wait_idle(cfn, 1, agent="remote-1")
    async with cfn.events_follow(types=["agent", "task"]) as events:
        task = await cfn.call("task.submit", text=text)
        await next_event(events, "task.started", task=task.id, agent="remote-1")
        await until_running(fifo)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole host "disappears"
        await proc.wait()
        lost = await next_event(events, "agent.lost", agent="remote-1")
        assert task.id in lost.data["requeued"]
    # A local agent (spawned on demand) picks the task up again.
    await cfn.call("agent.create", type="shell")
    (final,) = await wait_tasks(cfn, [task.id])
    assert final.status == "succeeded"
    assert final.result.output.strip() == "second-try"
    assert (await cfn.call("agent.status", agent="remote-1")).status == "lost"


async def test_task_clean_and_several_swarms(cfn: AsyncClient) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=2, name="one")
    task = await cfn.call("task.submit", text="echo x")
    await wait_tasks(cfn, [task.id])
    assert (await cfn.call("task.clean", older_than_s=0)).count == 1
    with pytest.raises(NotFound, match="no task"):
        await cfn.call("task.status", task=task.id)
    await cfn.call("swarm.init", topology="ring", max_agents=2, name="two")
    with pytest.raises(InvalidArgs, match=r"several swarms \(one, two\)"):
        await cfn.call("task.list")
    assert (await cfn.call("task.list", swarm="two")).tasks == []


async def test_finished_tasks_expire_after_the_retention(daemon_factory: DaemonFactory) -> None:
    d = await daemon_factory(**FAST, **{"tasks.retention_s": 1.0})
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=2, name="expiry")
        task = await cfn.call("task.submit", text="echo short-lived")
        await wait_tasks(cfn, [task.id])
        async with cfn.events_follow(types=["task.expired"]) as events:
            async for _ in events:
                break
        with pytest.raises(NotFound, match="no task"):
            await cfn.call("task.status", task=task.id)
