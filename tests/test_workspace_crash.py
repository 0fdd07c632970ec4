"""kill -9 of cfnd in the middle of a CFN run on a git repository: the restarted cfnd
reuses the run's worktrees and branches and reaches the same outcome, launching no
agent CLI twice."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from cfn_client.api import Client
from tests.conftest import SHARED_REDIS
from tests.daemon_proc import CfndProcess
from tests.test_workspace_loop import (
    PYTEST,
    REVIEW,
    TASK,
    Agents,
    add_test,
    fix,
    git,
    repo,
    reviewer_approves_the_fix,
)

__all__ = ["repo"]  # the fixture, imported for use here

FAST_ENV = {"CFN_AGENTS__HEARTBEAT_INTERVAL_S": "0.5", "CFN_AGENTS__LAPSE_S": "10"}


def test_sigkill_cfnd_mid_run_resumes_with_the_same_worktrees(
    cfnd_factory: Callable[..., CfndProcess], tmp_path: Path, repo: Path
) -> None:
    agents = Agents(tmp_path)
    agents.rule(**fix())
    agents.rule(**add_test())
    for r in reviewer_approves_the_fix():
        agents.rule(**r)
    conf = tmp_path / "cfnd.toml"
    conf.write_text(agents.config())
    proc = cfnd_factory("--config", str(conf), "--redis-url", SHARED_REDIS, env=FAST_ENV)
    with Client(proc.socket, timeout_s=60) as cfn:
        cfn.swarm_init("mesh", 10, name="wscrash")
        run = cfn.loop_start(
            TASK, repo=str(repo), checks=[PYTEST], implementers=["coder", "coder"],
            validators=["reviewer", "reviewer", "reviewer"],
        )  # fmt: skip
        with cfn.loop_follow(run.id) as events:
            for ev in events:
                if ev.type == "loop.implementer_done":
                    break  # one implementer reported; the other may still be at work
    proc.stop(signal.SIGKILL)
    proc.notifications.clear()
    proc.start()
    with Client(proc.socket, timeout_s=60) as cfn:
        with cfn.loop_follow(run.id) as events:
            for _ in events:
                pass
        final = cfn.loop_status(run.id)
    assert (final.status, final.decision) == ("done", "PROCEED"), final.outcome_reason
    assert "a + b" in git(repo, "show", f"{final.commit}:calc.py")
    # No agent CLI ran twice: two implementers, three reviewers, once each.
    calls = agents.calls()
    assert len([c for c in calls if REVIEW not in c["prompt"]]) == 2
    assert len([c for c in calls if REVIEW in c["prompt"]]) == 3
    # One worktree per implementer (plus cfn's merge and review trees), none twice.
    paths = [
        line.split(" ", 1)[1]
        for line in git(repo, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    ]
    assert len(paths) == len(set(paths))
    impl_trees = [p for p in paths if Path(p).name in final.implementers]
    assert len(impl_trees) == 2
    refs = git(repo, "for-each-ref", "--format=%(refname:short)", f"refs/heads/cfn/{run.id}/")
    branches = Counter(refs.split())
    assert set(branches) == {f"cfn/{run.id}/{a}" for a in [*final.implementers, "candidate"]}
    assert proc.stop() == 0
