"""Scenario 1: kill -9 a random agent every 2 s while a batch runs."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

from cfn_client.api import Client
from tests.chaos.harness import (
    Scale,
    live_agents,
    start_swarm,
    submit_batch,
    succeeded_events,
    tally,
    wait_final,
)
from tests.daemon_proc import CfndProcess
from tests.waiting import wait_until


def test_kill_random_agents_every_2s_during_a_batch(
    chaos_cfnd: Callable[..., CfndProcess], scale: Scale, tmp_path: Path
) -> None:
    proc = chaos_cfnd()
    effects = tmp_path / "effects"
    rng = random.Random(20261202)
    killed: dict[str, float] = {}
    with Client(proc.socket, timeout_s=60) as cfn:
        start_swarm(cfn, "churn", scale.agents, max_agents=scale.agents + 4)
        # Long enough per task that kills land while tasks are in flight.
        ids = submit_batch(cfn, effects, scale.tasks, work_s=0.05 if scale.long else 0.2)
        deadline = time.monotonic() + (600 if scale.long else 120)
        while time.monotonic() < deadline:
            counts = cfn.swarm_status().tasks
            if counts.get("succeeded", 0) + counts.get("failed", 0) >= len(ids):
                break
            time.sleep(scale.kill_every_s)  # the fault's cadence
            agents = live_agents(cfn)
            if agents:
                victim = rng.choice(sorted(agents))
                os.kill(agents[victim], signal.SIGKILL)
                killed[victim] = time.time()
    infos = wait_final(proc.socket, ids, 120)
    with Client(proc.socket, timeout_s=60) as cfn:
        fig = tally("agents_killed", ids, infos, effects, killed, succeeded_events(cfn, ids))
        replaced = cfn.events_list(types=["agent.replaced"], limit=10_000).events
        fig.recovery_s = [
            e.ts_ms / 1000 - killed[e.data["agent"]] for e in replaced if e.data["agent"] in killed
        ]
        # The swarm gets all its agents back (the last kill's replacement included).
        wait_until(lambda: len(live_agents(cfn)) == scale.agents, 60, "the swarm's agents back")
        fig.notes = {"kills": len(killed)}
    fig.save()
    assert killed, "no agent was killed: the batch ended too soon to test anything"
    fig.assert_promises()
    assert proc.stop() == 0
