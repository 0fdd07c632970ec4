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


# What a run of cfnctl may import, per command line: the root imports a command's module
# when it runs (cli/lazy.py), so `status` loads its own command and renderer, not the
# others, the async client, or the stdlib modules only those use. Whole-process times
# are measured in bench/latency.py, never here.
ARGV_PROBE = """
import contextlib, io, sys
from cfn_client.cli.main import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(" ".join(sorted(sys.modules)))
"""
#: Never imported by `--version`, `--help` or `status` (stdlib ones unless the bare
#: interpreter already has them, as a site hook may).
NOT_FOR_STATUS = (
    "cfn_client.api.async_", "cfn_client.api.async_admin", "cfn_client.api.async_transport",
    "cfn_client.conn.async_", "cfn_client.cli.completion", "cfn_client.cli.render.csv_out",
    "cfn_client.mcp_server",
    "asyncio", "tomllib", "csv", "json", "difflib", "tempfile", "shutil", "subprocess",
    "ipaddress", "curses", "concurrent.futures",
)  # fmt: skip
#: Not even imported by `--version` and `--help`: nothing that talks to cfnd.
NOT_FOR_HELP = ("cfn_client.api", "cfn_client.conn.sync", "cfn_client.wire.schema", "socket")
COMMAND_MODULES = ("cfn_client.cli.commands.", "cfn_client.cli.render.")


def modules_after(argv: list[str]) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", ARGV_PROBE, *argv], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.splitlines()[-1].split())


def test_status_imports_only_what_status_needs() -> None:
    # The bare interpreter's modules (a site hook's) are not cfnctl's doing.
    bare = set(subprocess.run(
        [sys.executable, "-c", "import sys; print(' '.join(sys.modules))"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split())  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cfni-") as tmp:
        missing = str(Path(tmp) / "none.sock")
        status, help_ = NOT_FOR_STATUS, NOT_FOR_STATUS + NOT_FOR_HELP
        helps = tuple(m for m in status if m != "shutil")  # click's help asks the width
        runs = {
            "--version": (["--version"], help_, set()),
            "--help": (["--help"], tuple(m for m in help_ if m != "shutil"), set()),
            "status": (["--socket", missing, "status"], status, {"system"}),
            "--json status": (["--socket", missing, "--json", "status"], status, {"system"}),
            "status --help": (["status", "--help"], helps, {"system"}),
        }
        for name, (argv, never, own) in runs.items():
            loaded = modules_after(argv) - bare
            wrong = sorted(m for m in loaded if any(m == n or m.startswith(n + ".") for n in never))
            assert not wrong, f"`cfnctl {name}` imported {wrong}"
            commands = {m.rsplit(".", 1)[1] for m in loaded if m.startswith(COMMAND_MODULES)}
            assert commands <= own | {"common"}, f"`cfnctl {name}` imported {sorted(commands)}"
