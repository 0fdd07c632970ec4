"""Local agents' log files stay bounded: rotated by size, forgotten with the agent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import structlog, sys
from cfn_daemon.util.logs import configure_logging
configure_logging("json", "info", sys.argv[1], 20000)
log = structlog.get_logger("t")
for i in range(5000):
    log.info("line", n=i, pad="x" * 40)
print("last words on stdout", flush=True)
raise SystemExit("and a crash message on stderr")
"""


def test_an_agent_log_is_rotated_by_size_with_stdout_and_stderr(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    with path.open("ab") as log:  # as cfnd starts a local agent: fds 1 and 2 are its log
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(path)], stdout=log, stderr=log, timeout=60
        )
    assert proc.returncode == 1
    older = Path(f"{path}.1")
    # ~500 kB were written; at most two files of about the cap remain.
    assert older.exists()
    assert older.stat().st_size < 20000 + 17 * 1024
    assert path.stat().st_size < 20000 + 17 * 1024
    text = path.read_text()
    assert '"n": 4999' in text
    assert "last words on stdout" in text and "and a crash message on stderr" in text
