"""cfnctl must start fast: it never imports the daemon, redis, structlog (or anyio)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORBIDDEN = ("cfn_daemon", "redis", "structlog", "anyio", "uvloop")
# Only `cfnctl monitor` on a terminal needs these; they are imported there, when needed.
LAZY = ("curses", "termios", "tty")

PROBE = """
import contextlib, io, json, sys, time
t0 = time.perf_counter()
import cfn_client.cli.main
import_ms = (time.perf_counter() - t0) * 1000
from cfn_client.cli.main import main
missing = sys.argv[1]
runs = (["--help"], ["--socket", missing, "status"], ["--socket", missing, "doctor"],
        ["--socket", missing, "--json", "config", "show"],
        ["--socket", missing, "swarm", "status"], ["--socket", missing, "agent", "list"],
        ["--socket", missing, "run", "x", "--wait"], ["--socket", missing, "task", "wait", "--all"],
        ["--socket", missing, "dlq", "list"], ["--socket", missing, "events", "--follow"],
        ["--socket", missing, "monitor"], ["--socket", missing, "--json", "monitor", "--once"])
for argv in runs:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(",")))
print(json.dumps({"import_ms": import_ms, "loaded": loaded}))
"""


def test_cfnctl_never_imports_daemon_side_modules() -> None:
    with tempfile.TemporaryDirectory(prefix="cfni-") as tmp:
        missing = str(Path(tmp) / "none.sock")
        proc = subprocess.run(
            [sys.executable, "-c", PROBE, missing, ",".join(FORBIDDEN + LAZY)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    print(f"import cfn_client.cli.main: {report['import_ms']:.1f} ms")
    assert report["loaded"] == []


def test_cfnctl_startup_time_is_reported() -> None:
    cfnctl = str(Path(sys.executable).parent / "cfnctl")
    start = time.perf_counter()
    proc = subprocess.run([cfnctl, "--version"], capture_output=True, text=True, timeout=60)
    elapsed_ms = (time.perf_counter() - start) * 1000
    assert proc.returncode == 0, proc.stderr
    print(f"cfnctl --version wall time: {elapsed_ms:.1f} ms")
