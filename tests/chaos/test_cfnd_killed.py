"""Scenario 2: kill -9 cfnd at random points of a task batch and of CFN runs (each
loop phase), on an external and on the embedded Redis."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from cfn_client.api import Client
from tests.chaos.conftest import CHAOS_ENV
from tests.chaos.harness import (
    Figures,
    Scale,
    answered,
    submit_batch,
    succeeded_events,
    tally,
    wait_final,
)
from tests.daemon_proc import CfndProcess
from tests.waiting import wait_until


def restart(proc: CfndProcess) -> float:
    """kill -9 and start again; the seconds until it answers requests."""
    proc.stop(signal.SIGKILL)
    proc.notifications.clear()
    started = time.monotonic()
    proc.start()
    with Client(proc.socket, timeout_s=30) as cfn:
        wait_until(lambda: answered(cfn.swarm_status), 60, "cfnd answering")
    return time.monotonic() - started


@pytest.mark.parametrize("store", ["external", "embedded"])
def test_kill_cfnd_at_random_points_of_a_batch(
    store: str,
    chaos_cfnd: Callable[..., CfndProcess],
    cfnd_factory: Callable[..., CfndProcess],
    scale: Scale,
    tmp_path: Path,
) -> None:
    proc = chaos_cfnd() if store == "external" else cfnd_factory(env=CHAOS_ENV)
    effects = tmp_path / "effects"
    rng = random.Random(7)
    with Client(proc.socket, timeout_s=60) as cfn:
        cfn.swarm_init("mesh", scale.agents, name="phoenix")
        cfn.agent_create("shell", count=scale.agents)
        ids = submit_batch(cfn, effects, scale.tasks, work_s=0.05)
    recoveries = []
    for _ in range(10 if scale.long else 3):
        time.sleep(rng.uniform(0.2, 1.5))  # a random point of the batch
        recoveries.append(restart(proc))
    infos = wait_final(proc.socket, ids, 180)
    with Client(proc.socket, timeout_s=60) as cfn:
        fig = tally(f"cfnd_killed_{store}", ids, infos, effects, (), succeeded_events(cfn, ids))
    fig.recovery_s = recoveries
    fig.save()
    fig.assert_promises()
    assert proc.stop() == 0


PHASES = ["loop.started", "loop.gate", "loop.validating", "loop.vote", "loop.round"]


@pytest.mark.parametrize("store", ["external", "embedded"])
def test_kill_cfnd_in_every_loop_phase(
    store: str,
    chaos_cfnd: Callable[..., CfndProcess],
    cfnd_factory: Callable[..., CfndProcess],
    scale: Scale,
    tmp_path: Path,
) -> None:
    from tests.test_loop_integration import agent_types

    impl_log = tmp_path / "impl.log"
    conf = tmp_path / "cfnd.toml"
    conf.write_text(
        agent_types({"EXAMPLE_LOG": str(impl_log)}, {"EXAMPLE_APPROVE_FROM_ROUND": "2"})
    )
    args = ("--config", str(conf))
    proc = chaos_cfnd(*args) if store == "external" else cfnd_factory(*args, env=CHAOS_ENV)
    fig = Figures(f"cfnd_killed_loop_{store}")
    with Client(proc.socket, timeout_s=60) as cfn:
        cfn.swarm_init("mesh", 8, name="loops")
    for phase in PHASES:
        with Client(proc.socket, timeout_s=60) as cfn:
            run = cfn.loop_start("add a health endpoint", implementers=["impl"],
                                 validators=["check"] * 3)  # fmt: skip
            with cfn.loop_follow(run.id) as events:
                for ev in events:
                    if ev.type == phase:
                        break
        fig.recovery_s.append(restart(proc))
        with Client(proc.socket, timeout_s=60) as cfn:
            with cfn.loop_follow(run.id) as events:
                for _ in events:
                    pass
            final = cfn.loop_status(run.id)
        fig.tasks += 1
        # The outcome of an uninterrupted run: reject in round 1, approve in round 2.
        if (final.status, final.decision) == ("done", "PROCEED") and [
            r["status"] for r in final.rounds
        ] == ["failed", "passed"]:
            fig.succeeded += 1
        else:
            fig.lost += 1
            fig.notes[phase] = f"{final.status}/{final.decision}"
    # No implementer step ran twice for one (run, round, iteration).
    steps = Counter(
        (r["run"], r["agent"], r["round"], r["iteration"])
        for r in map(json.loads, impl_log.read_text().splitlines())
    )
    fig.our_reruns = sum(n - 1 for n in steps.values() if n > 1)
    fig.save()
    fig.assert_promises()
    assert proc.stop() == 0
