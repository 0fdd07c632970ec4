"""The shell blocks marked runnable in README.md, docs/QUICKSTART.md and
examples/README.md run as written against a real cfnd.

A block runs when the line before its ```sh fence is ``<!-- runnable -->``; a block
after ``<!-- cfnd: DIR -->`` is one that starts cfnd in DIR (a foreground daemon), so
the test starts ``cfnd --config cfn.toml`` there itself at that point. Blocks run in
order with ``bash -euo pipefail``, each from the same temp dir (with ``examples/`` in
it, as in the repository's root), with only the test's own paths passed through the
environment (``$CFN_SOCKET`` for the README's).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli_support import own_cfnd
from tests.daemon_proc import BIN, CfndProcess

ROOT = Path(__file__).resolve().parent.parent
_BLOCK = re.compile(r"^<!-- (runnable|cfnd: [\w./-]+) -->\n```sh\n(.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Block:
    marker: str  # "runnable" or "cfnd: DIR"
    code: str


def blocks(path: Path) -> list[Block]:
    return [Block(m.group(1), m.group(2)) for m in _BLOCK.finditer(path.read_text())]


def shell_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CFN_", "NO_COLOR"))}
    # cfnctl and cfnd as installed next to this Python, as a user's PATH has them.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def run_block(block: Block, cwd: Path, env: dict[str, str]) -> str:
    res = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=180, check=False,
    )  # fmt: skip
    assert res.returncode == 0, f"{block.code}\nexit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_the_markers_are_found() -> None:
    readme, quick = blocks(ROOT / "README.md"), blocks(ROOT / "docs" / "QUICKSTART.md")
    assert [b.marker for b in readme] == ["runnable"]
    assert [b.marker for b in quick] == ["runnable", "cfnd: demo", "runnable", "runnable"]
    assert "cfnctl init demo --offline" in quick[0].code
    examples = blocks(ROOT / "examples" / "README.md")
    assert [b.marker for b in examples] == ["runnable", "cfnd: ms", "runnable"]


@pytest.mark.timeout(180)
def test_readme_blocks_run(short_tmp: Path) -> None:
    with own_cfnd("cfnrd-") as cfnd:
        env = shell_env(CFN_SOCKET=str(cfnd.socket))
        outputs = [run_block(b, short_tmp, env) for b in blocks(ROOT / "README.md")]
    assert "hello from the swarm" in outputs[0]


def run_project_doc(path: Path, where: Path) -> list[str]:
    """Run ``path``'s blocks in order from ``where`` (which has ``examples/`` as the
    repository's root has it), starting cfnd at its ``cfnd: DIR`` block; the outputs
    of the runnable blocks."""
    (where / "examples").symlink_to(ROOT / "examples")
    env = shell_env()
    daemons: list[CfndProcess] = []
    outputs: list[str] = []
    try:
        for block in blocks(path):
            if block.marker.startswith("cfnd: "):
                project = where / block.marker.removeprefix("cfnd: ")
                assert "cfnd --config cfn.toml" in block.code
                cfnd = CfndProcess(
                    where / f"proc{len(daemons)}", ["--config", "cfn.toml"], cwd=project,
                    own_paths=False,
                )  # fmt: skip
                daemons.append(cfnd)
                cfnd.start(timeout_s=60)
                continue
            outputs.append(run_block(block, where, env))
        for cfnd in daemons:
            assert cfnd.stop() == 0, cfnd.log()[-3000:]
    finally:
        for cfnd in daemons:
            cfnd.close()
    return outputs


@pytest.mark.timeout(240)
def test_quickstart_blocks_run_in_order(short_tmp: Path) -> None:
    init, first, scripted = run_project_doc(ROOT / "docs" / "QUICKSTART.md", short_tmp)
    assert "wrote demo/cfn.toml" in init
    assert "PROCEED" in first
    assert "done PROCEED" in scripted


@pytest.mark.timeout(240)
def test_examples_readme_blocks_run_in_order(short_tmp: Path) -> None:
    init, epic = run_project_doc(ROOT / "examples" / "README.md", short_tmp)
    assert "wrote ms/cfn.toml" in init
    swarm, head, *phases = epic.splitlines()
    assert swarm.startswith("swarm ") and " created" in swarm
    assert head.startswith("epic ") and head.endswith("(microservices-offline): done")
    assert sum("PROCEED" in line for line in phases) == 5
