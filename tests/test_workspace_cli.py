"""The workspace commands as a user types them: the real cfnctl against a real cfnd."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import SHARED_REDIS
from tests.daemon_proc import CfndProcess, cfnctl
from tests.test_workspace_loop import (
    PYTEST,
    TASK,
    Agents,
    fix,
    git,
    repo,
    reviewer_approves_the_fix,
)

__all__ = ["repo"]  # the fixture, imported for use here

FAST_ENV = {"CFN_AGENTS__HEARTBEAT_INTERVAL_S": "0.5", "CFN_AGENTS__LAPSE_S": "10"}


def test_loop_on_a_repo_follow_status_apply_and_clean_with_cfnctl(
    cfnd_factory: Callable[..., CfndProcess], tmp_path: Path, repo: Path
) -> None:
    agents = Agents(tmp_path)
    agents.rule(**fix())
    for r in reviewer_approves_the_fix():
        agents.rule(**r)
    conf = tmp_path / "cfnd.toml"
    conf.write_text(agents.config())
    proc = cfnd_factory("--config", str(conf), "--redis-url", SHARED_REDIS, env=FAST_ENV)
    sock = proc.socket
    assert cfnctl(sock, "swarm", "init", "mesh", "8", "--name", "cli").returncode == 0
    started = cfnctl(
        sock, "--json", "loop", TASK, "--repo", str(repo), "--check", PYTEST,
        "--implementers", "coder", "--validators", "reviewer,reviewer,reviewer", "--detach",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    run = json.loads(started.stdout)["id"]
    followed = cfnctl(sock, "loop", "follow", run, timeout_s=120)
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert "candidate ready at" in followed.stdout
    assert "changed 1 file(s)" in followed.stdout
    assert f"result: cfn/{run}/candidate at" in followed.stdout
    status = json.loads(cfnctl(sock, "--json", "loop", "status", run).stdout)
    assert (status["status"], status["decision"]) == ("done", "PROCEED")
    assert status["branch"] == f"cfn/{run}/candidate" and status["checks"] == [PYTEST]
    human = cfnctl(sock, "loop", "status", run).stdout
    assert f"cfnctl loop apply {run}" in human
    # A dirty tree is refused with the files named; a clean one gets the merge.
    (repo / "calc.py").write_text("# local edit\n")
    refused = cfnctl(sock, "loop", "apply", run)
    assert refused.returncode == 1 and "calc.py" in refused.stderr + refused.stdout
    git(repo, "checkout", "--", "calc.py")
    applied = cfnctl(sock, "loop", "apply", run)
    assert applied.returncode == 0, applied.stderr
    assert "merged into your branch" in applied.stdout
    assert "a + b" in (repo / "calc.py").read_text()
    cleaned = cfnctl(sock, "loop", "clean", run)
    assert cleaned.returncode == 0 and "removed" in cleaned.stdout
    assert not git(repo, "for-each-ref", f"refs/heads/cfn/{run}/")
    assert proc.stop() == 0
