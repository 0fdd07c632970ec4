"""kill -9 of cfnd while agents work: a restarted cfnd recovers everything, losing nothing."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from cfn_client.api import Client
from tests.conftest import SHARED_REDIS
from tests.daemon_proc import CfndProcess

FAST_ENV = {"CFN_AGENTS__HEARTBEAT_INTERVAL_S": "0.2", "CFN_AGENTS__LAPSE_S": "3"}


def test_sigkill_cfnd_mid_work_then_restart_loses_nothing(
    cfnd_factory: Callable[..., CfndProcess], tmp_path: Path
) -> None:
    proc = cfnd_factory("--redis-url", SHARED_REDIS, env=FAST_ENV)
    runs = tmp_path / "runs"
    with Client(proc.socket, timeout_s=60) as cfn:
        cfn.swarm_init("mesh", 4, name="phoenix")
        cfn.agent_create("shell", count=3)
        ids = [cfn.task_submit(f'echo "$CFN_TASK_ID" >> {runs}; sleep 0.2').id for _ in range(40)]
        with cfn.events_follow(types=["task.succeeded"]) as events:
            for n, _ in enumerate(events, start=1):
                if n == 5:  # well under way: some done, some running, most queued
                    break
        agents_before = {a.id: a.pid for a in cfn.agent_list().agents}

    proc.stop(signal.SIGKILL)
    proc.notifications.clear()
    proc.start()  # same socket, state dir and key prefix

    with Client(proc.socket, timeout_s=120) as cfn:
        assert [s.id for s in cfn.swarm_list().swarms] == ["phoenix"]
        done = cfn.task_wait(ids, timeout_s=90).tasks
        assert [t.status for t in done] == ["succeeded"] * len(ids)
        results = Counter(
            e.data["task"] for e in cfn.events_list(types=["task.succeeded"], limit=10_000).events
        )
        assert results == Counter(ids)  # one result per task, none lost
        agents_after = {a.id: a for a in cfn.agent_list().agents}
        # The agents outlived the crash and were adopted, not replaced.
        for agent_id, pid in agents_before.items():
            assert agents_after[agent_id].pid == pid
            assert agents_after[agent_id].status in ("idle", "busy")
    assert set(runs.read_text().split()) == set(ids)
    assert proc.stop() == 0
