"""Scenario 6: many tasks with 10 kB outputs — status latency as they pile up, Redis
memory before and after retention, cfnd's RSS. Growth must be bounded: retention
gives Redis its memory back and cfnd does not keep what it served."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from cfn_client.api import Client
from tests.chaos.harness import Figures, Scale, rss_kb, wait_final
from tests.daemon_proc import CfndProcess
from tests.redis_servers import RedisProcess
from tests.waiting import wait_until

AGENT_TYPE = (
    '[agent_types.bigout]\nkind = "python"\nentry = "tests.chaos.agents:big_output"\n'
    "concurrency = 8\n"
)


def status_ms(cfn: Client, n: int = 20) -> float:
    """Median wall time of the monitor's call (swarm status), in ms."""
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        cfn.swarm_status()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 2)


def used_memory(redis: RedisProcess) -> int:
    client = redis.client()
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def test_many_stored_outputs_stay_bounded(
    chaos_cfnd: Callable[..., CfndProcess],
    chaos_redis: RedisProcess,
    scale: Scale,
    tmp_path: Path,
) -> None:
    conf = tmp_path / "cfnd.toml"
    conf.write_text(AGENT_TYPE)
    proc = chaos_cfnd("--config", str(conf))
    n = scale.bulk_tasks
    fig = Figures("bounded_state", tasks=n)
    with Client(proc.socket, timeout_s=120) as cfn:
        cfn.swarm_init("mesh", 4, name="bulk")
        cfn.agent_create("bigout", count=2)
        fig.notes["status_ms_0"] = status_ms(cfn)
        mem_before = used_memory(chaos_redis)
        ids = [cfn.task_submit(str(i), type="bigout").id for i in range(n)]
    infos = wait_final(proc.socket, ids, 900 if scale.long else 300)
    fig.succeeded = sum(1 for i in infos.values() if i.status == "succeeded")
    fig.lost = n - fig.succeeded
    with Client(proc.socket, timeout_s=120) as cfn:
        fig.notes[f"status_ms_{n}"] = status_ms(cfn)
        assert cfn.swarm_status().tasks.get("succeeded") == n  # counted, not capped
    mem_full = used_memory(chaos_redis)
    assert proc.proc is not None
    fig.notes["cfnd_rss_mib"] = round(rss_kb(proc.proc.pid) / 1024, 1)
    fig.notes["redis_bytes_per_task"] = (mem_full - mem_before) // n
    # Retention: restarted with a 1 s retention, cfnd deletes every finished task.
    proc.stop()
    proc.env["CFN_TASKS__RETENTION_S"] = "1"
    proc.notifications.clear()
    proc.start()
    with Client(proc.socket, timeout_s=120) as cfn:
        wait_until(
            lambda: cfn.swarm_status().tasks.get("succeeded", 0) == 0, 120, "retention to run"
        )
        fig.notes["status_ms_after_retention"] = status_ms(cfn)
    mem_after = used_memory(chaos_redis)
    fig.notes["redis_mib"] = {
        "before": round(mem_before / 2**20, 1),
        "full": round(mem_full / 2**20, 1),
        "after_retention": round(mem_after / 2**20, 1),
    }
    fig.save()
    assert fig.lost == 0, fig
    # Retention gave back (nearly) all the batch took.
    assert mem_after - mem_before < 0.1 * (mem_full - mem_before) + (2 << 20), fig.notes
    assert fig.notes["cfnd_rss_mib"] < 300, fig.notes
    assert proc.stop() == 0
