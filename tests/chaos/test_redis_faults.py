"""Scenario 3: Redis restarted, crashed, stalled (SIGSTOP) and down, in mid-batch."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cfn_client.api import Client
from tests.chaos.harness import (
    Scale,
    answered,
    start_swarm,
    submit_batch,
    succeeded_events,
    tally,
    wait_final,
)
from tests.daemon_proc import CfndProcess
from tests.redis_servers import RedisProcess
from tests.waiting import wait_until


def _restart(redis: RedisProcess, scale: Scale) -> None:
    redis.stop()
    redis.start()


def _crash(redis: RedisProcess, scale: Scale) -> None:
    redis.kill()
    redis.start()


def _stall(redis: RedisProcess, scale: Scale) -> None:
    assert redis.pid is not None
    os.kill(redis.pid, signal.SIGSTOP)
    try:
        time.sleep(scale.stall_s)  # the fault itself
    finally:
        os.kill(redis.pid, signal.SIGCONT)


def _down(redis: RedisProcess, scale: Scale) -> None:
    redis.stop()
    time.sleep(2 * scale.stall_s)  # the fault itself: 30 s in the long form
    redis.start()


FAULTS = {"restart": _restart, "crash": _crash, "stall": _stall, "down": _down}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_redis_fault_mid_batch(
    fault: str,
    chaos_cfnd: Callable[..., CfndProcess],
    chaos_redis: RedisProcess,
    scale: Scale,
    tmp_path: Path,
) -> None:
    proc = chaos_cfnd()
    effects = tmp_path / "effects"
    with Client(proc.socket, timeout_s=60) as cfn:
        pids = start_swarm(cfn, "rf", scale.agents)
        ids = submit_batch(cfn, effects, scale.tasks, work_s=0.02)
        wait_until(lambda: effects.exists(), 60, "the batch under way")
    FAULTS[fault](chaos_redis, scale)
    started = time.monotonic()  # recovery counts from the fault's end
    with Client(proc.socket, timeout_s=60) as cfn:
        wait_until(lambda: answered(cfn.swarm_status), 60, "cfnd answering again")
        recovery = time.monotonic() - started
    infos = wait_final(proc.socket, ids, 180)
    assert proc.proc is not None and proc.proc.poll() is None, "cfnd died"
    with Client(proc.socket, timeout_s=60) as cfn:
        fig = tally(f"redis_{fault}", ids, infos, effects, (), succeeded_events(cfn, ids))
        fig.recovery_s = [recovery]
        # No healthy agent was killed or replaced because of the fault.
        after = {a.id: a.pid for a in cfn.agent_list().agents if a.status in ("idle", "busy")}
        fig.notes["agents_replaced"] = len(set(pids) - set(after))
    fig.save()
    fig.assert_promises()
    assert after == pids
    assert proc.stop() == 0
