"""Epic phase ordering (pure) and an epic of real CFN runs."""

from __future__ import annotations

import pytest

from cfn_client.api import AsyncClient
from cfn_client.errors import InvalidArgs
from cfn_client.workflow_schema import EpicSpec, PhaseSpec
from cfn_daemon import workflow
from tests.conftest import DaemonFactory
from tests.test_loop_integration import FAST, agent_types


def epic(*phases: tuple[str, list[str], bool]) -> EpicSpec:
    return EpicSpec(
        name="e", phases=[PhaseSpec(name=n, depends_on=d, parallel=p) for n, d, p in phases]
    )


DIAMOND = epic(
    ("design", [], False),
    ("api", ["design"], True),
    ("ui", ["design"], True),
    ("release", ["api", "ui"], False),
)


def test_layers_and_cycle_naming() -> None:
    assert workflow.validate(DIAMOND) == [["design"], ["api", "ui"], ["release"]]
    cyclic = epic(("a", ["c"], False), ("b", ["a"], False), ("c", ["b"], False))
    with pytest.raises(InvalidArgs, match="dependency cycle: a -> c -> b -> a"):
        workflow.validate(cyclic)
    with pytest.raises(InvalidArgs, match="unknown phase"):
        workflow.validate(epic(("a", ["nope"], False)))
    with pytest.raises(InvalidArgs, match="repeated: a"):
        workflow.validate(epic(("a", [], False), ("a", [], False)))


def test_next_to_start_respects_dependencies_and_parallel() -> None:
    assert workflow.next_to_start(DIAMOND, {}) == ["design"]
    assert workflow.next_to_start(DIAMOND, {"design": "running"}) == []
    assert workflow.next_to_start(DIAMOND, {"design": "done"}) == ["api", "ui"]
    assert workflow.next_to_start(DIAMOND, {"design": "done", "api": "done", "ui": "running"}) == []
    assert workflow.next_to_start(DIAMOND, {"design": "done", "api": "done", "ui": "done"}) == [
        "release"
    ]
    serial = epic(("a", [], False), ("b", [], False))
    assert workflow.next_to_start(serial, {}) == ["a"]
    assert workflow.next_to_start(serial, {"a": "running"}) == []
    assert workflow.epic_status(DIAMOND, {"design": "done", "api": "escalated"}) == "blocked"


async def test_epic_of_four_phases_runs_in_order_with_two_in_parallel(
    daemon_factory: DaemonFactory,
) -> None:
    d = await daemon_factory(config_text=agent_types({"EXAMPLE_SLEEP": "0.5"}, {}), **FAST)
    phases = [
        {"name": "design", "implementers": ["impl"], "validators": ["check"] * 3},
        {
            "name": "api",
            "depends_on": ["design"],
            "parallel": True,
            "implementers": ["impl"],
            "validators": ["check"] * 3,
        },
        {
            "name": "ui",
            "depends_on": ["design"],
            "parallel": True,
            "implementers": ["impl"],
            "validators": ["check"] * 3,
        },
        {
            "name": "release",
            "depends_on": ["api", "ui"],
            "implementers": ["impl"],
            "validators": ["check"] * 3,
        },
    ]
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="hierarchical", max_agents=30, name="epic")
        started = await cfn.call("epic.start", epic={"name": "shop", "phases": phases})
        assert started.order == [["design"], ["api", "ui"], ["release"]]
        async with cfn.stream("events.follow", {"types": ["epic", "loop.finished"]}) as events:
            async for ev in events:
                if ev["type"] == "epic.finished":
                    break
        info = await cfn.call("epic.status", epic_id=started.id)
        assert info.status == "done"
        runs = {p.name: await cfn.call("loop.status", run=p.run) for p in info.phases}
        span = {n: (r.created_ms, r.updated_ms) for n, r in runs.items()}
        assert span["design"][1] <= span["api"][0]
        assert span["design"][1] <= span["ui"][0]
        assert max(span["api"][1], span["ui"][1]) <= span["release"][0]
        # api and ui ran at the same time.
        assert span["api"][0] < span["ui"][1]
        assert span["ui"][0] < span["api"][1]
        with pytest.raises(InvalidArgs, match="dependency cycle: a -> b -> a"):
            await cfn.call(
                "epic.start",
                epic={
                    "name": "bad",
                    "phases": [
                        {"name": "a", "depends_on": ["b"]},
                        {"name": "b", "depends_on": ["a"]},
                    ],
                },
            )
