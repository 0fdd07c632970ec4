"""The newcomer's path, as one test, from a fresh virtualenv:

1. ``python -m venv``, then ``pip install .`` of this checkout (a real, non-editable
   install: the wheel's package data — templates, Lua scripts — must be in it);
2. ``cfnctl init demo --offline`` with that venv's cfnctl;
3. that venv's ``cfnd --config cfn.toml`` in the project;
4. the cfnctl line of the generated ``.claude/commands/cfn-loop.md``, as Claude Code
   would run it, with the example agents;
5. the run ends in PROCEED.

Offline and fast: the fresh venv sees this test run's installed dependencies through
a ``.pth`` line (so pip finds them satisfied and ``--no-index`` never asks an index),
and builds the wheel with ``--no-build-isolation`` (setuptools and wheel come with the
test extras). cfn itself is installed into the fresh venv, not linked.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.daemon_proc import CfndProcess

ROOT = Path(__file__).resolve().parent.parent
# What a checkout holds that is not the source of the package.
NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
              ".hypothesis", "docs", "bench")  # fmt: skip


def sh(*cmd: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=240,
        check=False,
    )  # fmt: skip


def fresh_venv(where: Path) -> Path:
    """A new venv with cfn ``pip install``-ed from this checkout; its bin dir."""
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    bin_dir = venv / "bin"
    site = Path(
        subprocess.run(
            [bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()
    )  # fmt: skip
    # The dependencies, as a pip cache would give them, without a network.
    (site / "_cfn_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CFN_", "PIP_"))}
    # A copy of the checkout as it is: setuptools builds in the source tree (build/,
    # *.egg-info), and a stale build/ there could slip old files into the wheel.
    source = where / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    installed = sh(
        sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", "--no-index",
        "--no-build-isolation", "--no-cache-dir", "--quiet", ".",
        cwd=source, env={**env, "TMPDIR": str(where)},
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return bin_dir


@pytest.mark.timeout(300)  # about 30 s on a loaded 2-core machine
def test_fresh_venv_pip_install_init_cfnd_and_the_cfn_loop_command_proceeds(
    short_tmp: Path,
) -> None:
    bin_dir = fresh_venv(short_tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFN_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    # It is the fresh install that runs, not this checkout.
    where = sh(bin_dir / "python", "-c", "import cfn_client; print(cfn_client.__file__)",
               cwd=short_tmp, env=env)  # fmt: skip
    assert where.stdout.startswith(str(short_tmp / "venv")), where.stdout + where.stderr
    assert (bin_dir / "cfnctl").is_file() and (bin_dir / "cfnd").is_file()

    out = sh("cfnctl", "init", "demo", "--offline", cwd=short_tmp, env=env)
    assert out.returncode == 0, out.stderr
    demo = short_tmp / "demo"
    slash = (demo / ".claude" / "commands" / "cfn-loop.md").read_text()

    cfnd = CfndProcess(
        short_tmp / "proc", ["--config", "cfn.toml"], cwd=demo, own_paths=False, bin_dir=bin_dir
    )
    cfnd.start(timeout_s=60)
    try:
        # The command tells Claude to make a swarm first when there is none: `cfnctl ...`.
        swarm_line = next(line for line in slash.splitlines() if "swarm init" in line)
        swarm_cmd = shlex.split(swarm_line[swarm_line.index("`") + 1 : swarm_line.rindex("`")])
        made = sh(*swarm_cmd, cwd=demo, env=env)
        assert made.returncode == 0, made.stdout + made.stderr
        # The cfnctl line of its ```bash block, with Claude Code's $ARGUMENTS filled in.
        block = slash.split("```bash\n", 1)[1].split("```", 1)[0]
        line = next(ln for ln in block.splitlines() if ln.startswith("cfnctl") and " loop " in ln)
        argv = shlex.split(line.replace("$ARGUMENTS", "add a health endpoint"))
        ran = sh(*argv, cwd=demo, env=env)
        assert ran.returncode == 0, ran.stdout + ran.stderr + cfnd.log()[-3000:]
        docs = [json.loads(x) for x in ran.stdout.splitlines() if x.strip()]
        assert docs[-1]["status"] == "done"
        assert docs[-1]["decision"] == "PROCEED"
        assert any(d.get("type") == "loop.vote" for d in docs)
        assert cfnd.stop() == 0, cfnd.log()[-3000:]
    finally:
        cfnd.close()
