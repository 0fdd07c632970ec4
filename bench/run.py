"""Run every benchmark and print Markdown tables; write the figures as JSON.

    python bench/run.py [--quick | --tiny] [--json bench-results.json]

Default sizes are the documented ones (docs/BENCHMARKS.md); ``--quick`` finishes
within about 5 minutes on the 2-core reference machine; ``--tiny`` only proves
the benchmarks still work (tests/test_bench_smoke.py), its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import latency, loop, queues, scale  # noqa: E402
from cfn_daemon.util.aio import run_loop  # noqa: E402
from cfn_daemon.util.logs import configure_logging  # noqa: E402

SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "jobs": 2000, "spawn_jobs": 300, "reps": 3, "n": 1000, "cli_n": 10,
        "validators": (3, 7, 15), "rounds": 10,
        "stored": [0, 1000, 10000, 50000], "clients": 100,
        "beaters": (10, 100, 1000), "beat_s": 30.0, "loop_runs": 5,
    },
    "quick": {
        "jobs": 500, "spawn_jobs": 100, "reps": 3, "n": 300, "cli_n": 5,
        "validators": (3, 7, 15), "rounds": 5,
        "stored": [0, 1000, 10000], "clients": 100,
        "beaters": (10, 100, 1000), "beat_s": 10.0, "loop_runs": 3,
    },
    "tiny": {
        "jobs": 20, "spawn_jobs": 5, "reps": 1, "n": 10, "cli_n": 1,
        "validators": (3,), "rounds": 1,
        "stored": [0, 20], "clients": 5,
        "beaters": (10, 50), "beat_s": 1.0, "loop_runs": 1,
    },
}  # fmt: skip


def machine() -> dict[str, str]:
    redis_v = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(len(__import__("os").sched_getaffinity(0))),
        "redis": redis_v,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--tiny", action="store_true")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"))
    args = parser.parse_args()
    s = SIZES["quick" if args.quick else "tiny" if args.tiny else "full"]
    configure_logging("console", "warning")
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine()}
    results["queues"] = run_loop(queues.run(s["jobs"], s["reps"], s["spawn_jobs"]))
    print("## Queues\n\n" + queues.markdown(results["queues"]) + "\n", flush=True)
    results["latency"] = run_loop(latency.run(s["n"], s["cli_n"], s["validators"], s["rounds"]))
    print("## Latency\n\n" + latency.markdown(results["latency"]) + "\n", flush=True)
    results["scale"] = run_loop(
        scale.run(s["stored"], s["clients"], 3.0, s["beaters"], s["beat_s"])
    )
    print("## Scale\n\n" + scale.markdown(results["scale"]) + "\n", flush=True)
    results["loop"] = run_loop(loop.run(s["loop_runs"]))
    print("## CFN loop\n\n" + loop.markdown(results["loop"]) + "\n", flush=True)
    results["total_s"] = time.perf_counter() - started
    args.json.write_text(json.dumps(results, indent=2))
    print(f"machine: {results['machine']}\ntotal {results['total_s']:.0f} s, JSON in {args.json}")


if __name__ == "__main__":
    main()
