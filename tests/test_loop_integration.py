"""The CFN loop end to end: real cfn-agent processes running the example agents."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from cfn_client.api import AsyncClient
from cfn_daemon.app import Daemon
from cfn_daemon.core import consensus
from cfn_daemon.queue.votes import submit_vote
from cfn_daemon.util.signing import Signer
from tests.conftest import DaemonFactory
from tests.daemon_proc import CFNCTL

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "agents"
HEARTBEAT_S = 0.2
# A lapse of 50 missed beats: up to eight agents start and work at once on a loaded
# 2-core machine, and nothing here waits for a lapse (no agent is killed).
FAST = {
    "agents.heartbeat_interval_s": HEARTBEAT_S,
    "agents.lapse_s": 50 * HEARTBEAT_S,
    "agents.stop_grace_s": 1.0,
}


def agent_types(
    impl_env: dict[str, str], check_env: dict[str, str], owner_env: dict[str, str] | None = None
) -> str:
    def table(name: str, script: str, role: str, env: dict[str, str]) -> str:
        env_toml = ", ".join(f'{k} = "{v}"' for k, v in env.items())
        return (
            f'[agent_types.{name}]\nkind = "command"\n'
            f'exec = ["{sys.executable}", "{EXAMPLES / script}"]\n'
            f'role = "{role}"\nenv = {{ {env_toml} }}\n'
        )

    out = table("impl", "implementer.py", "implementer", impl_env)
    out += table("check", "validator.py", "validator", check_env)
    if owner_env is not None:
        out += table("po", "owner.py", "owner", owner_env)
    return out


async def start(daemon_factory: DaemonFactory, config: str) -> Daemon:
    return await daemon_factory(config_text=config, **FAST)


async def run_to_rest(cfn: AsyncClient, **args: Any) -> Any:
    """Start a run and follow it until it finishes or escalates; return its info."""
    info = await cfn.call("loop.start", **args)
    async with cfn.stream("loop.follow", {"run": info.id}) as events:
        async for _ in events:
            pass
    return await cfn.call("loop.status", run=info.id)


async def test_passes_on_the_first_round(daemon_factory: DaemonFactory) -> None:
    d = await start(daemon_factory, agent_types({"EXAMPLE_CONFIDENCE": "0.9"}, {}))
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=8, name="loop1")
        info = await run_to_rest(
            cfn,
            task="add a health endpoint",
            implementers=["impl", "impl"],
            validators=["check"] * 4,
        )
        assert info.status == "done"
        assert info.decision == "PROCEED"
        assert info.loop2_round == 1
        assert [r["status"] for r in info.rounds] == ["passed"]
        assert info.rounds[0]["votes_counted"] == 4
        kinds = [e.type for e in (await cfn.call("events.list", types=["loop"])).events]
        assert kinds[0] == "loop.started"
        assert kinds[-1] == "loop.finished"
        assert kinds.count("loop.vote") == 4
        votes = list((await cfn.call("events.list", types=["loop.vote"])).events)
        assert all(v.data["verified"] for v in votes)  # signed with each agent's token
    # What cfnd kept in memory for the run goes with its driver (bounded state).
    for _ in range(200):
        if info.id not in d.loops.drivers._running:
            break
        await asyncio.sleep(0.05)
    assert info.id not in d.loops._locks and info.id not in d.loops._pulses
    assert not [t for t in d.loops.steps._submitted if t.startswith(f"{info.id}.")]
    assert not [v for v in d.loops.steps.rounds._verdicts if v[0].startswith(info.id)]


async def test_fails_the_gate_then_passes(daemon_factory: DaemonFactory, tmp_path: Path) -> None:
    log = tmp_path / "impl.log"
    d = await start(
        daemon_factory, agent_types({"EXAMPLE_CONFIDENCE": "0.5,0.9", "EXAMPLE_LOG": str(log)}, {})
    )
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=6, name="gate")
        info = await run_to_rest(
            cfn,
            task="write the parser",
            implementers=["impl", "impl"],
            validators=["check", "check", "check"],
        )
        assert info.status == "done"
        gates = [h for h in info.history if h["kind"] == "loop3"]
        assert [g["outcome"] for g in gates] == ["gate-failed", "gate-passed"]
        assert gates[0]["low"] == 0.5
        runs = [json.loads(line) for line in log.read_text().splitlines()]
        assert {r["iteration"] for r in runs} == {1, 2}
        second = [r for r in runs if r["iteration"] == 2]
        # The gate's reasons (who was below the threshold) reach the next iteration.
        assert all("0.5" in r["feedback"] and "0.75" in r["feedback"] for r in second)


async def test_consensus_fails_twice_feedback_reaches_implementers_then_passes(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    log = tmp_path / "impl.log"
    d = await start(
        daemon_factory,
        agent_types(
            {"EXAMPLE_LOG": str(log)},
            {"EXAMPLE_APPROVE_FROM_ROUND": "3", "EXAMPLE_ISSUE": "SQL built by string concat"},
        ),
    )
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=8, name="rounds")
        info = await run_to_rest(
            cfn, task="store the users", implementers=["impl", "impl"], validators=["check"] * 4
        )
        assert info.status == "done"
        assert info.loop2_round == 3
        assert [r["status"] for r in info.rounds] == ["failed", "failed", "passed"]
        runs = [json.loads(line) for line in log.read_text().splitlines()]
        round3 = [r for r in runs if r["round"] == 3]
        assert round3
        for r in round3:
            # The validators' structured feedback is in the implementer's input.
            assert "SQL built by string concat" in r["feedback"]
            assert "SQL built by string concat" in r["prompt"]
            assert "[security]" in r["feedback"]
        first = [r for r in runs if r["round"] == 1]
        assert all(r["feedback"] == "" for r in first)


async def test_exhausted_run_escalates_then_a_human_approves(
    daemon_factory: DaemonFactory,
) -> None:
    d = await start(daemon_factory, agent_types({}, {"EXAMPLE_APPROVE_FROM_ROUND": "0"}))
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=6, name="human")
        info = await run_to_rest(
            cfn, task="migrate the db", implementers=["impl"], validators=["check"] * 3, max_loop2=2
        )
        assert info.status == "escalated"
        assert "consensus failed in 2 rounds" in info.outcome_reason
        # A human approves with the real cfnctl (run without blocking this event loop).
        proc = await asyncio.create_subprocess_exec(
            *CFNCTL,
            "--socket",
            str(d.socket_path),
            "loop",
            "approve",
            info.id,
            "--reason",
            "shipping it",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out
        approved = await cfn.call("loop.status", run=info.id)
        assert approved.status == "done"
        assert approved.decision == "PROCEED"
        # Following it again replays past the old escalation up to the real end.
        async with cfn.stream("loop.follow", {"run": info.id}) as events:
            seen = [ev["type"] async for ev in events]
        assert "loop.escalated" in seen
        assert seen[-1] == "loop.finished"


async def test_owner_defers_with_backlog(daemon_factory: DaemonFactory) -> None:
    d = await start(
        daemon_factory,
        agent_types(
            {}, {}, {"EXAMPLE_DECISION": "DEFER", "EXAMPLE_BACKLOG": "add metrics;write docs"}
        ),
    )
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=6, name="owner")
        info = await run_to_rest(
            cfn, task="ship v1", implementers=["impl"], validators=["check"] * 3, owner="po"
        )
        assert info.status == "done"
        assert info.decision == "DEFER"
        backlog = await cfn.call("loop.backlog", run=info.id)
        assert backlog.items == ["add metrics", "write docs"]


async def test_byzantine_validators_cannot_sway_the_honest_majority(
    daemon_factory: DaemonFactory,
) -> None:
    """7 validators, f = 2: one never answers; another (with Redis write access) forges
    a reject in an honest validator's name, signed with a key of its own that it also
    writes over the honest one's in Redis. cfnd verifies with the key it pinned when it
    spawned the agent: the forgery is a bad signature, the honest approvals decide."""
    config = agent_types({}, {}) + (
        '[agent_types.mute]\nkind = "command"\nrole = "validator"\n'
        f'exec = ["{sys.executable}", "{EXAMPLES / "validator.py"}"]\n'
        'env = { EXAMPLE_MUTE = "1" }\n'
    )
    d = await daemon_factory(config_text=config, **FAST, **{"loop.round_timeout_s": 3.0})
    redis, keys = d.store.redis, d.store.keys
    attacker = Signer()
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=10, name="byz")
        info = await cfn.call(
            "loop.start",
            task="harden the login",
            implementers=["impl"],
            validators=["check"] * 6 + ["mute"],
        )
        honest, liar = info.validators[:5], info.validators[5]
        async with cfn.stream("loop.follow", {"run": info.id}) as events:
            async for ev in events:
                if ev["type"] == "loop.vote" and ev["data"]["validator"] == liar:
                    await redis.hset(keys.tokens("byz"), honest[0], attacker.public)
                    forged = consensus.Vote(
                        validator=honest[0],
                        approve=False,
                        confidence=1.0,
                        reasoning="forged",
                        round=1,
                    )
                    sig = attacker.sign(consensus.vote_message(info.id, 1, forged))
                    forged = msgspec.structs.replace(forged, signature=sig)
                    await submit_vote(redis, keys.votes("byz", info.id, 1), forged)
        final = await cfn.call("loop.status", run=info.id)
    assert final.status == "done"
    (round1,) = final.rounds
    assert round1["status"] == "passed"
    assert round1["missing"] == [info.validators[6]]  # the mute one
    assert [honest[0], "bad signature"] in round1["rejected"]
    assert sorted(round1["accepted"]) == sorted([*honest, liar])
    assert round1["votes_counted"] == 6


async def test_team_sized_by_complexity_when_no_types_given(
    daemon_factory: DaemonFactory,
) -> None:
    # The sized teams use the built-in types; claude is not installed here, so those
    # types run the example agents (a missing binary is refused at loop start).
    sized = "".join(
        f'[agent_types.{name}]\nkind = "command"\n'
        f'exec = ["{sys.executable}", "{EXAMPLES / "implementer.py"}"]\n'
        for name in ("coder", "reviewer", "tester", "security-specialist", "architect")
    )
    d = await start(daemon_factory, agent_types({}, {}) + sized)
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="hierarchical", max_agents=30, name="sized")
        sizes = {}
        for complexity in ("simple", "medium", "complex"):
            info = await cfn.call("loop.start", task="t", complexity=complexity)
            sizes[complexity] = (len(info.implementers), len(info.validators))
            await cfn.call("loop.cancel", run=info.id)
        assert sizes == {"simple": (1, 2), "medium": (2, 4), "complex": (3, 7)}
        info = await cfn.call(
            "loop.start",
            task="t",
            implementers=["impl"],
            validators=["check"] * 2,
            complexity="complex",
        )
        assert (len(info.implementers), len(info.validators)) == (1, 2)  # listed types win
