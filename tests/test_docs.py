"""The examples in docs/ run as written against a live cfnd."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.daemon_proc import CfndProcess

DOCS = Path(__file__).resolve().parent.parent / "docs"


def fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_protocol_shell_examples_work_with_socat(cfnd: CfndProcess) -> None:
    blocks = fenced((DOCS / "PROTOCOL.md").read_text(), "sh")
    assert blocks, "PROTOCOL.md lost its shell examples"
    env = {**os.environ, "CFN_SOCKET": str(cfnd.socket)}
    for block in blocks:
        res = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        replies = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
        assert replies, block
        assert all(r["ok"] for r in replies), replies


def test_protocol_python_example_runs(cfnd: CfndProcess) -> None:
    (block,) = fenced((DOCS / "PROTOCOL.md").read_text(), "python")
    res = subprocess.run(
        [sys.executable, "-c", block],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "CFN_SOCKET": str(cfnd.socket)},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "external"


def test_every_documented_op_exists_and_every_op_is_documented() -> None:
    from cfn_client.wire.ops import OPS

    text = (DOCS / "PROTOCOL.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", text, flags=re.M))
    codes = {c for c in documented if "." not in c and c not in OPS}
    assert documented - codes == set(OPS)
