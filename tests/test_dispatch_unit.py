"""Pure parts of the dispatcher: agent choice per strategy/topology, priority aging."""

from __future__ import annotations

from cfn_client.wire.schema.swarm import SwarmInfo
from cfn_daemon.core.placement import AgentRecord, Pending, choose
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.settings.schema import Config, TasksConfig
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
    d.backlog = {
        "1": Pending("1", "new-high", "high", "shell", now),
        "2": Pending("2", "old-low", "low", "shell", now - 31_000),
        "3": Pending("3", "new-normal", "normal", "shell", now - 1000),
        "4": Pending("4", "newer-low", "low", "shell", now - 2000),
    }
    assert [p.task_id for p in d._ordered()] == ["old-low", "new-high", "new-normal", "newer-low"]
