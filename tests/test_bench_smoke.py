"""The benchmarks still run (tiny sizes; the figures are not checked, only that they exist)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(200)  # ~35 s alone; a loaded 2-core CI machine needs far more
def test_quick_bench_runs_at_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # Its own process group: on a timeout the bench's redis-servers and agents go too.
    bench = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--tiny", "--json", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = bench.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bench.pid, signal.SIGKILL)
        bench.wait()
    proc = subprocess.CompletedProcess(bench.args, bench.returncode, stdout, stderr)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    systems = {(r["workload"], r["system"]) for r in res["queues"]}
    # (raw, raw pipelined, 4 peers, cfn direct and routed) x 2 modes + spawn 2 + batched 2
    assert len(systems) == 20
    for row in res["queues"]:
        assert row["jobs_per_s_median"] > 0
        assert row["cfn_ratio"] > 0
    cfn = [r for r in res["queues"] if r["system"].startswith("cfn")]
    assert all(r["redis_cmds_per_job"] > 0 for r in cfn)
    assert res["latency"]["ping"]["p50_us"] > 0
    assert res["latency"]["cli"]["status_ratio"] > 0
    assert res["latency"]["kill_detect"]["detect_ms"] > 0
    assert res["latency"]["submit_to_start"]["p50_ms"] > 0
    assert res["latency"]["submit_to_start"]["p99_ms"] > 0
    (rounds,) = res["latency"]["round_close"]
    assert rounds["validators"] == 3
    assert rounds["samples"] == 1
    # 1 ms resolution (Redis stream ids): a round closing within the same ms reads 0.
    assert rounds["p50_ms"] >= 0
    assert res["scale"]["swarm_status"][1]["tasks"] == 20
    assert all(row["monitor_ms"] > 0 for row in res["scale"]["swarm_status"])
    assert res["scale"]["swarm_status"][1]["monitor_x_first"] > 0
    beaters = res["scale"]["heartbeaters"]
    assert [row["agents"] for row in beaters] == [10, 50]
    for row in beaters:
        assert row["beats_per_s"] > 0
        assert row["cfnd_rss_mb"] > 0
        assert row["redis_ops_per_s"] > 0
        assert row["cfnd_cpu_pct"] >= 0  # 1 s at 10 ms clock ticks: an idle cfnd may read 0
        assert row["cfnd_rss_mb_x_first"] > 0
    assert res["loop"]["wall_ms"] > 0
    assert res["loop"]["agent_ms"] > 0 and res["loop"]["coordination_per_round_ms"] != 0
    assert res["scale"]["idle_agent"]["rss_mb_per_slot"] > 0
    assert "| cfn, 1 agent, no-op |" in proc.stdout
    assert "| agents at 1 Hz (swarms) |" in proc.stdout
    assert "last vote -> decision, 3 validators" in proc.stdout
    assert "| cfn, 1 agent, no-op, batched submit |" in proc.stdout
