"""Epic phase ordering (pure) and an epic of real CFN runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cfn_client.api import AsyncClient
from cfn_client.wire.errors import InvalidArgs
from cfn_client.wire.schema.workflow import EpicSpec, PhaseSpec
from cfn_daemon.core import workflow
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
        follow = {"types": ["epic", "loop.finished"], "since_ms": started.created_ms}
        async with cfn.stream("events.follow", follow) as events:
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


async def test_sprints_stop_at_a_failing_checkpoint(daemon_factory: DaemonFactory) -> None:
    from cfn_client.wire.schema.workflow import sprints_spec

    d = await daemon_factory(config_text=agent_types({"EXAMPLE_CONFIDENCE": "0.9"}, {}), **FAST)
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=12, name="sprints")
        spec = sprints_spec("ship the cart", 3, ["test -e /", "true"], 0.85)
        for phase in spec["phases"]:
            phase.update(implementers=["impl"], validators=["check"] * 3)
        spec["phases"][1]["checks"] = ["echo lint failed >&2; exit 1"]
        started = await cfn.call("epic.start", epic=spec)
        follow = {"types": ["epic"], "since_ms": started.created_ms}
        async with cfn.stream("events.follow", follow) as events:
            async for ev in events:
                if ev["type"] == "epic.finished" and ev["data"]["epic"] == started.id:
                    break
        info = await cfn.call("epic.status", epic_id=started.id)
    assert info.status == "failed"
    by_name = {p.name: p for p in info.phases}
    assert by_name["sprint-1"].checkpoint == "passed"
    assert by_name["sprint-2"].status == "failed"
    assert by_name["sprint-2"].checkpoint.startswith("failed: `echo lint failed")
    assert by_name["sprint-3"].status == "waiting"  # never started after the failure


def test_cfnctl_epic_file_and_cycle(cfnd_factory: Any, tmp_path: Path) -> None:
    from tests.conftest import SHARED_REDIS
    from tests.daemon_proc import cfnctl

    conf = tmp_path / "cfnd.toml"
    conf.write_text(agent_types({}, {}))
    proc = cfnd_factory("--config", str(conf), "--redis-url", SHARED_REDIS)
    assert cfnctl(proc.socket, "swarm", "init", "mesh", "12", "--name", "cli").returncode == 0
    good = tmp_path / "epic.toml"
    good.write_text(
        'name = "cli epic"\n'
        '[[phases]]\nname = "one"\nimplementers = ["impl"]\nvalidators = ["check", "check"]\n'
        '[[phases]]\nname = "two"\ndepends_on = ["one"]\nimplementers = ["impl"]\n'
        'validators = ["check", "check"]\nchecks = ["true"]\n'
    )
    res = cfnctl(proc.socket, "epic", "start", str(good), timeout_s=60)
    assert res.returncode == 0, res.stdout + res.stderr
    # Steps show on a terminal's live line only (tests/test_cli_output.py); the result
    # has every phase, its run, decision and checkpoint.
    assert "phase two started" not in res.stdout
    two = next(line for line in res.stdout.splitlines() if line.strip().startswith("two "))
    assert "done" in two and "PROCEED" in two and "checkpoint passed" in two
    assert ": done" in res.stdout
    bad = tmp_path / "cycle.json"
    bad.write_text(
        '{"name": "loopy", "phases": [{"name": "a", "depends_on": ["b"]},'
        ' {"name": "b", "depends_on": ["a"]}]}'
    )
    res = cfnctl(proc.socket, "cfn-loop-epic", str(bad))
    assert res.returncode == 1
    assert "dependency cycle: a -> b -> a" in res.stderr
    assert proc.stop() == 0


def test_epic_files_in_toml_json_and_yaml_read_the_same(tmp_path: Path) -> None:
    from cfn_client.wire.schema.workflow import parse_epic

    toml = 'name = "e"\n[[phases]]\nname = "a"\n[[phases]]\nname = "b"\ndepends_on = ["a"]\n'
    json_text = '{"name": "e", "phases": [{"name": "a"}, {"name": "b", "depends_on": ["a"]}]}'
    yaml_text = "name: e\nphases:\n  - name: a\n  - name: b\n    depends_on: [a]\n"
    parsed = [
        parse_epic(toml, "e.toml"),
        parse_epic(json_text, "e.json"),
        parse_epic(yaml_text, "e.yaml"),
    ]
    assert parsed[0] == parsed[1] == parsed[2]


async def test_an_epic_phase_reserved_before_a_crash_starts_its_run_once(
    daemon_factory: DaemonFactory, key_prefix: str
) -> None:
    import time

    import msgspec
    import redis.asyncio as aioredis

    from cfn_daemon.store.keys import Keys
    from tests.conftest import SHARED_REDIS
    from tests.test_bounded_state import seed_swarm

    # cfnd reserved the phase's run id (HSETNX) and died before the run existed.
    keys = Keys(key_prefix)
    spec = EpicSpec(
        name="e", phases=[PhaseSpec(name="design", implementers=["impl"], validators=["check"])]
    )
    raw = aioredis.Redis.from_url(SHARED_REDIS)
    try:
        await seed_swarm(raw, key_prefix, "crash", indexed=True)
        now = int(time.time() * 1000)
        await raw.hset(
            keys.epic("crash", "epic-1"),
            mapping={"spec": msgspec.json.encode(spec), "created_ms": now,
                     "phase:design": "run-reserved"},
        )  # fmt: skip
        await raw.zadd(keys.epics("crash"), {"epic-1": now})
        d = await daemon_factory(config_text=agent_types({}, {}), **FAST)
        async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
            follow = {"swarm": "crash", "types": ["epic.finished"], "since_ms": now}
            async with cfn.stream("events.follow", follow) as events:
                async for _ in events:
                    break
            info = await cfn.call("epic.status", swarm="crash", epic_id="epic-1")
        assert info.status == "done"
        assert info.phases[0].run == "run-reserved"
        assert [r.decode() for r in await raw.zrange(keys.runs("crash"), 0, -1)] == ["run-reserved"]
    finally:
        await raw.aclose()
