"""The benchmarks still run (tiny sizes; the figures are not checked, only that they exist)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_bench_runs_at_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--tiny", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    systems = {(r["workload"], r["system"]) for r in res["queues"]}
    assert len(systems) == 14
    for row in res["queues"]:
        assert row["jobs_per_s_median"] > 0
        assert row["cfn_ratio"] > 0
    cfn = [r for r in res["queues"] if r["system"].startswith("cfn")]
    assert all(r["redis_cmds_per_job"] > 0 for r in cfn)
    assert res["latency"]["ping"]["p50_us"] > 0
    assert res["latency"]["cli"]["status_ratio"] > 0
    assert res["latency"]["kill_detect"]["detect_ms"] > 0
    assert res["scale"]["swarm_status"][1]["tasks"] == 20
    assert res["loop"]["wall_ms"] > 0
    assert res["scale"]["idle_agent"]["rss_mb_per_slot"] > 0
    assert "| cfn, 1 agent, no-op |" in proc.stdout
