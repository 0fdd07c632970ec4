"""The vote-forgery attack of issue 10, against real cfnd, Redis and cfn-agents.

A malicious party with write access to Redis (a task of the implementer, say)
overwrites every validator's published key with its own and pre-submits approvals
signed with it. The validators all reject. Before Ed25519 keys pinned by cfnd, the
round passed 4/4 on the forged votes; now each forged vote is a bad signature, is
recorded as ``security.vote_rejected``, and the honest rejects decide.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import msgspec
import pytest

from cfn_client.api import AsyncClient
from cfn_client.wire.schema.swarm import TERMINAL_TASK_STATUSES
from cfn_daemon.cfnloop.rounds import Rounds
from cfn_daemon.core import consensus
from cfn_daemon.core.run_records import val_task_id
from cfn_daemon.queue.votes import submit_vote
from cfn_daemon.swarm.keyring import KeyRing
from cfn_daemon.util.signing import Signer
from tests.conftest import DaemonFactory
from tests.test_loop_integration import FAST, agent_types

NEVER = {"EXAMPLE_APPROVE_FROM_ROUND": "0", "EXAMPLE_ISSUE": "it is broken"}


async def forge(d: Any, run: str, validators: list[str], attacker: Signer) -> None:
    """Overwrite the validators' published keys and pre-submit approvals signed with
    the attacker's key (before any validator votes)."""
    redis, keys = d.store.redis, d.store.keys
    for v in validators:
        await redis.hset(keys.tokens("forge"), v, attacker.public)
        vote = consensus.Vote(validator=v, approve=True, confidence=1.0, reasoning="lgtm", round=1)
        sig = attacker.sign(consensus.vote_message(run, 1, vote))
        await submit_vote(
            redis, keys.votes("forge", run, 1), msgspec.structs.replace(vote, signature=sig)
        )


async def test_forged_approvals_with_overwritten_keys_do_not_pass_a_round(
    daemon_factory: DaemonFactory,
) -> None:
    d = await daemon_factory(config_text=agent_types({}, NEVER), **FAST)
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        info = await start_run(cfn)
        await forge(d, info.id, info.validators, Signer())
        async with cfn.stream("loop.follow", {"run": info.id}) as events:
            async for _ in events:
                pass
        final = await cfn.call("loop.status", run=info.id)
        rejected = (await cfn.call("events.list", types=["security"])).events
    assert final.rounds, final
    round1 = final.rounds[0]
    assert round1["status"] != "passed", round1
    assert sorted(who for who, why in round1["rejected"] if why == "bad signature") == sorted(
        info.validators
    )
    assert final.status != "done", final.status
    assert_each_announced_once(rejected, info.validators)
    # ... and audited: one entry per forged vote, the agent as the refused sender.
    audit = await d.store.redis.xrange(d.store.keys.audit)
    refused = [e for _, e in audit if e[b"op"] == b"security.vote_rejected"]
    assert sorted(e[b"user"].decode() for e in refused) == sorted(
        f"agent:{v}" for v in info.validators
    )
    assert {(e[b"outcome"], e[b"code"]) for e in refused} == {(b"denied", b"bad_signature")}


async def start_run(cfn: AsyncClient) -> Any:
    """Swarm ``forge`` and a run of one implementer and four always-rejecting validators."""
    await cfn.call("swarm.init", topology="mesh", max_agents=8, name="forge")
    return await cfn.call(
        "loop.start", task="ship it", implementers=["impl"], validators=["check"] * 4, max_loop2=1
    )


def assert_each_announced_once(events: list[Any], validators: list[str]) -> None:
    """Every forged vote got exactly one ``security.vote_rejected`` naming its validator."""
    announced = collections.Counter(
        e.data["validator"] for e in events if e.type == "security.vote_rejected"
    )
    assert announced == collections.Counter(validators), announced


async def registered(cfn: AsyncClient, count: int) -> None:
    """Until ``count`` agents have registered (checked on every agent event)."""

    async def ready() -> bool:
        agents = (await cfn.call("agent.list")).agents
        return sum(a.status in ("idle", "busy") for a in agents) >= count

    async with cfn.events_follow(types=["agent"]) as events:
        if await ready():
            return
        async for _ in events:
            if await ready():
                return


async def test_forged_votes_read_while_the_real_keys_are_in_the_pipe(
    daemon_factory: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flake's ordering, made deterministic: cfnd reads the forged votes (and the
    attacker's keys in Redis) while the validators' real keys are still on their pipes.
    cfnd used to pin the attacker's key on first use there, count the forged approvals
    as verified (announcing nothing) and, once every validator task had ended, pass the
    round 4/4; the real key pinned later made them "bad signature" without an event."""
    gate = asyncio.Event()
    tallied = asyncio.Event()
    pin_from_pipe = KeyRing.pin_from_pipe

    async def held_pipe(self: KeyRing, fd: int, swarm: str, agents: list[str]) -> None:
        if agents[0].startswith("check-"):  # the validators' pipes are read when we say
            await gate.wait()
        await pin_from_pipe(self, fd, swarm, agents)

    close = Rounds.close
    validator_tasks: list[str] = []
    after_done = 0

    async def counted_close(self: Rounds, swarm: str, state: Any, *a: Any, **kw: Any) -> Any:
        nonlocal after_done
        out = await close(self, swarm, state, *a, **kw)
        statuses = await self.tasks.statuses(swarm, validator_tasks)
        if validator_tasks and all(s in TERMINAL_TASK_STATUSES for s in statuses.values()):
            after_done += 1
        if after_done >= 2 or out is not None:  # a whole tally saw every vote, keys held
            tallied.set()
        return out

    monkeypatch.setattr(KeyRing, "pin_from_pipe", held_pipe)
    monkeypatch.setattr(Rounds, "close", counted_close)
    d = await daemon_factory(config_text=agent_types({}, NEVER), **FAST)
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        info = await start_run(cfn)
        # The agents have published their own keys: the forged ones replace them.
        await asyncio.wait_for(registered(cfn, 5), 30)
        await forge(d, info.id, info.validators, Signer())
        validator_tasks += [val_task_id(info.id, 1, v) for v in info.validators]
        await asyncio.wait_for(tallied.wait(), 40)
        held = await cfn.call("loop.status", run=info.id)
        assert not held.rounds, f"the round closed while the keys were in flight: {held.rounds}"
        assert not (await cfn.call("events.list", types=["loop.vote"])).events
        gate.set()
        async with cfn.stream("loop.follow", {"run": info.id}) as events:
            async for _ in events:
                pass
        final = await cfn.call("loop.status", run=info.id)
        rejected = (await cfn.call("events.list", types=["security"])).events
    round1 = final.rounds[0]
    assert round1["status"] != "passed", round1
    assert sorted(who for who, why in round1["rejected"] if why == "bad signature") == sorted(
        info.validators
    )
    assert sorted(round1["accepted"]) == sorted(info.validators), round1  # the honest rejects
    assert_each_announced_once(rejected, info.validators)
