"""Pure parts of the dispatcher: agent choice per strategy/topology, priority aging,
the LLM process cap."""

from __future__ import annotations

import random

from cfn_client.wire.schema.swarm import SwarmInfo
from cfn_daemon.core.backlog import Backlog
from cfn_daemon.core.placement import (
    AgentRecord,
    LlmRoom,
    Pending,
    Plan,
    choose,
    llm_load,
    llm_room,
    order_backlog,
    plan,
)
from cfn_daemon.queue.notify import NotifyHub
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.settings.schema import AgentTypeConfig, Config, TasksConfig
from cfn_daemon.swarm.context import LlmSlots
from cfn_daemon.swarm.dispatcher import Dispatcher


def swarm(topology: str = "mesh", strategy: str = "balanced") -> SwarmInfo:
    return SwarmInfo(
        id="s",
        name="s",
        topology=topology,
        strategy=strategy,  # type: ignore[arg-type]
        max_agents=10,
        status="active",
        created_ms=0,
    )


def agent(
    aid: str,
    *,
    load: int = 0,
    ewma: float | None = None,
    kind: str = "shell",
    status: str = "idle",
    role: str = "implementer",
) -> AgentRecord:
    return AgentRecord(
        id=aid,
        swarm="s",
        type=kind,
        role=role,
        status=status,  # type: ignore[arg-type]
        load=load,
        concurrency=2,
        ewma_ms=ewma,
    )


def test_balanced_picks_least_loaded() -> None:
    agents = [agent("a", load=1), agent("b", load=0), agent("c", load=2)]
    assert choose(swarm(), agents, "shell", None) == (["b"], "")


def test_performance_picks_fastest_measured() -> None:
    agents = [agent("a", ewma=900.0), agent("b", ewma=120.0, load=1), agent("c", ewma=400.0)]
    assert choose(swarm(strategy="performance"), agents, "shell", None)[0] == ["b"]


def test_reliability_picks_two() -> None:
    agents = [agent("a"), agent("b"), agent("c", load=1)]
    assert choose(swarm(strategy="reliability"), agents, "shell", None)[0] == ["a", "b"]


def test_type_capacity_and_liveness_filter() -> None:
    agents = [agent("a", kind="coder"), agent("b", load=2), agent("c", status="failed")]
    assert choose(swarm(), agents, "shell", None) == ([], "")


def test_a_pin_names_a_slot_that_a_replacement_fills() -> None:
    dead = agent("a", status="failed")
    fresh = agent("a2")
    fresh.slot = "a"  # the supervisor's replacement of "a"
    others = [agent("b"), agent("c")]
    assert choose(swarm(), [dead, fresh, *others], "shell", None, target="a") == (["a2"], "")
    # Nobody else takes it, and a dead slot with no replacement waits.
    assert choose(swarm(), [dead, *others], "shell", None, target="a") == ([], "")
    assert choose(swarm(), [dead, fresh, *others], "shell", None, target="b") == (["b"], "")


def test_star_assigns_via_hub_spokes_first() -> None:
    agents = [agent("hub"), agent("s1"), agent("s2")]
    picked, via = choose(swarm("star"), agents, "shell", None)
    assert via == "hub"
    assert picked == ["s1"]


def test_ring_token_moves_to_the_successor() -> None:
    agents = [agent("a"), agent("b"), agent("c")]
    assert choose(swarm("ring"), agents, "shell", "a")[0] == ["b"]
    assert choose(swarm("ring"), agents, "shell", "c")[0] == ["a"]


def test_aging_serves_old_low_priority_before_new_high() -> None:
    cfg = Config(tasks=TasksConfig(aging_s=30.0))
    d = Dispatcher.__new__(Dispatcher)
    d.config = lambda: cfg
    now = now_ms()
    d.backlog = Backlog()
    for p in [
        Pending("1", "new-high", "high", "shell", now),
        Pending("2", "old-low", "low", "shell", now - 31_000),
        Pending("3", "new-normal", "normal", "shell", now - 1000),
        Pending("4", "newer-low", "low", "shell", now - 2000),
    ]:
        d.backlog[p.entry_id] = p
    assert [p.task_id for p in d._ordered()] == ["old-low", "new-high", "new-normal", "newer-low"]


def test_backlog_keeps_the_order_of_a_full_sort() -> None:
    """The incremental per-priority order equals sorting the whole backlog (which the
    dispatcher did on every pass), through additions and removals in any order."""
    rng = random.Random(13)
    now = 1_000_000
    for _ in range(300):
        backlog, plain = Backlog(), {}
        for i in range(rng.randint(0, 60)):
            prio = rng.choice(["high", "normal", "low"])
            p = Pending(str(i), f"t{i}", prio, "shell", now - rng.randint(0, 60_000))
            backlog[p.entry_id] = plain[p.entry_id] = p
            if plain and rng.random() < 0.3:
                gone = rng.choice(sorted(plain))
                del backlog[gone], plain[gone]
        aging_ms = rng.choice([0, 10_000, 30_000, 1e12])
        got = [p.entry_id for p in backlog.ordered(now, aging_ms)]
        assert got == [p.entry_id for p in order_backlog(plain.values(), now, aging_ms)]
        assert len(backlog) == len(plain) and set(backlog) == set(plain)


# ---------------------------------------------------------------------------- LLM cap


def llm_agent(aid: str, *, load: int = 0, status: str = "idle") -> AgentRecord:
    return agent(aid, load=load, kind="coder", status=status)


def queued(*types: str, targets: dict[int, str] | None = None) -> list[Pending]:
    now = now_ms()
    return [
        Pending(str(i), f"t{i}", "normal", t, now + i, (targets or {}).get(i))
        for i, t in enumerate(types)
    ]


def is_coder(agent_type: str) -> bool:
    return agent_type == "coder"


def task_ids(result: Plan) -> list[str]:
    return [p.pending.task_id for p in result.placements]


def test_plan_without_cap_fills_every_agent() -> None:
    agents = [llm_agent("a"), llm_agent("b")]
    result = plan(swarm(), agents, queued("coder", "coder", "coder", "coder"), None)
    assert task_ids(result) == ["t0", "t1", "t2", "t3"]  # concurrency 2 each
    assert result.llm_used == 0 and result.llm_held == 0  # no cap: nothing counted
    assert [a.load for a in agents] == [0, 0]  # the input is not modified
    assert result.cursor == result.placements[-1].agents[-1]


def test_plan_stops_llm_tasks_at_the_room_and_keeps_other_work_going() -> None:
    agents = [llm_agent("a"), llm_agent("b"), agent("sh")]
    backlog = queued("coder", "coder", "shell", "coder", "shell")
    result = plan(swarm(), agents, backlog, None, is_llm=is_coder, llm=LlmRoom(cap=4, free=2))
    assert task_ids(result) == ["t0", "t1", "t2", "t4"]
    assert (result.llm_used, result.llm_held) == (2, 1)


def test_plan_with_no_room_holds_every_llm_task() -> None:
    agents = [llm_agent("a"), agent("sh")]
    backlog = queued("coder", "shell", "coder")
    result = plan(swarm(), agents, backlog, "x", is_llm=is_coder, llm=LlmRoom(cap=2, free=0))
    assert task_ids(result) == ["t1"]
    assert (result.llm_used, result.llm_held) == (0, 2)


def test_plan_counts_both_reliability_replicas() -> None:
    agents = [llm_agent("a"), llm_agent("b"), llm_agent("c")]
    rel = swarm(strategy="reliability")
    result = plan(rel, agents, queued("coder", "coder"), None, is_llm=is_coder, llm=LlmRoom(4, 3))
    assert [p.agents for p in result.placements] == [["a", "b"]]
    # The second task needs 2 more processes and only 1 is left: it waits, whole.
    assert (result.llm_used, result.llm_held) == (2, 1)


def test_plan_keeps_llm_order_once_the_room_is_short() -> None:
    # A 2-replica task that does not fit closes the room: a later 1-replica (pinned)
    # task does not overtake it, so a reliability task cannot starve.
    agents = [llm_agent("a"), llm_agent("b")]
    backlog = queued("coder", "coder", targets={1: "a"})
    rel = swarm(strategy="reliability")
    result = plan(rel, agents, backlog, None, is_llm=is_coder, llm=LlmRoom(cap=3, free=1))
    assert result.placements == []
    assert result.llm_held == 2


def test_plan_trims_replicas_to_a_cap_below_two() -> None:
    agents = [llm_agent("a"), llm_agent("b")]
    rel = swarm(strategy="reliability")
    result = plan(rel, agents, queued("coder"), None, is_llm=is_coder, llm=LlmRoom(1, 1))
    assert [p.agents for p in result.placements] == [["a"]]
    assert result.llm_used == 1


def test_plan_skips_tasks_nobody_can_take_without_using_room() -> None:
    agents = [llm_agent("a", load=2), agent("sh")]
    result = plan(
        swarm(), agents, queued("coder", "shell"), None, is_llm=is_coder, llm=LlmRoom(2, 2)
    )
    assert task_ids(result) == ["t1"]
    assert (result.llm_used, result.llm_held) == (0, 0)  # waiting for an agent, not the cap


def test_llm_load_and_room() -> None:
    agents = [
        llm_agent("a", load=2, status="busy"),
        llm_agent("b", load=1, status="draining"),
        llm_agent("c", load=1, status="failed"),  # its work was reclaimed
        agent("sh", load=2, status="busy"),
    ]
    assert llm_load(agents, is_coder) == 3
    assert llm_room(0, [5]) is None  # 0: no limit
    assert llm_room(4, [3, 2]) == LlmRoom(cap=4, free=0)
    assert llm_room(4, [1, 0]) == LlmRoom(cap=4, free=3)


def test_llm_slots_share_room_and_wake_held_swarms() -> None:
    woken: list[str] = []
    slots = LlmSlots(wake=woken.append)
    cfg = Config(agent_types={"bot": AgentTypeConfig(kind="codex")})
    assert slots.is_llm("coder", cfg) and slots.is_llm("bot", cfg)
    assert not slots.is_llm("shell", cfg) and not slots.is_llm("no-such-type", cfg)
    slots.report("a", 2)
    assert slots.room("b", 0, 3) == LlmRoom(cap=3, free=1)
    assert slots.room("a", 1, 3) == LlmRoom(cap=3, free=2)  # its own fresh load counts
    slots.report("b", 1, held=True)
    slots.report("c", 0, held=True)
    assert slots.total == 3 and woken == []
    slots.report("a", 1)  # a process ended: the swarms that wait are woken
    assert woken == ["b", "c"]
    slots.report("b", 1)  # b is not waiting any more
    slots.forget("a")
    assert woken == ["b", "c", "c"]
    assert slots.load("a") is None and slots.total == 1


def test_work_news_from_notify_words() -> None:
    """The dispatcher learns from one message what changed: a queued task, an agent's
    capacity after a completion (no re-read), anything else about agents (re-read)."""
    hub = NotifyHub.__new__(NotifyHub)
    hub._swarms, hub._swarms_changed = {}, []
    first = hub.pulses("s").take_news()
    assert first.queued and first.agents_changed  # a new dispatcher looks at everything
    hub.dispatch(b"cfn:{s}:notify", b"ev cap:shell-1a:0:idle done:t1")
    news = hub.pulses("s").take_news()
    assert (news.queued, news.agents_changed, news.capacity) == (
        False, False, {"shell-1a": (0, "idle")},
    )  # fmt: skip
    hub.dispatch(b"cfn:{s}:notify", b"ev queued")
    hub.dispatch(b"cfn:{s}:notify", b"agent")
    news = hub.pulses("s").take_news()
    assert news.queued and news.agents_changed
    hub.dispatch(b"cfn:{s}:notify", b"something-new")
    news = hub.pulses("s").take_news()
    assert news.queued and news.agents_changed


async def test_same_entry_id_in_two_queues_keeps_both_tasks() -> None:
    # Stream ids are unique per stream only: a MULTI of submits (task.submit_many) puts
    # `<ms>-0` in q:high and in q:normal. Keyed by the id alone, one task was dropped
    # from the backlog and stayed queued for good.
    d = Dispatcher.__new__(Dispatcher)
    d.backlog = Backlog()
    entries = [
        (b"p:{s}:q:high", b"1700000000000-0", {b"t": b"t-high", b"y": b"shell", b"e": b"1"}),
        (b"p:{s}:q:normal", b"1700000000000-0", {b"t": b"t-norm", b"y": b"shell", b"e": b"1"}),
        (b"p:{s}:q:normal", b"1700000000000-1", {b"t": b"t-norm2", b"y": b"shell", b"e": b"1"}),
    ]
    await d._remember(entries)
    assert len(d.backlog) == 3
    assert [p.task_id for p in d.backlog.ordered(2, 1e12)] == ["t-high", "t-norm", "t-norm2"]
