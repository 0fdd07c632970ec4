"""CFN runs on a real git repository, driven through real cfn-agent processes running a
stand-in of the Claude Code CLI (tests/agents/fake_claude.py) that edits files by rules.

Each test makes a throwaway repository with a failing test (``add`` subtracts).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cfn_client.api import AsyncClient
from cfn_client.wire.errors import CfnError
from cfn_daemon.app import Daemon
from tests.conftest import DaemonFactory

FAKE_CLAUDE = Path(__file__).resolve().parent / "agents" / "fake_claude.py"
# A generous lapse: seven agents, pytest and git start at once on a 2-core machine.
FAST = {"agents.heartbeat_interval_s": 0.5, "agents.lapse_s": 10.0, "agents.stop_grace_s": 1.0}
TASK = "Fix the add function so that the tests pass"
PYTEST = f"{sys.executable} -m pytest -q -p no:cacheprovider"
REVIEW = "Review the implementers' work"
APPROVE = '{"vote": "approve", "confidence": 0.95, "output": "the change is right"}'
REJECT = (
    '{"vote": "reject", "confidence": 0.9, "output": "not fixed", "feedback": "add still wrong"}'
)


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository on branch main whose test fails: ``add`` subtracts."""
    path = tmp_path / "project"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Dev")
    git(path, "config", "user.email", "dev@example.com")
    (path / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (path / "test_calc.py").write_text(
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


class Agents:
    """The fake CLI's rules and call log, and the cfnd config that uses it."""

    def __init__(self, tmp_path: Path) -> None:
        self.rules_file = tmp_path / "rules.json"
        self.log = tmp_path / "claude.log"
        self.rules: list[dict[str, Any]] = []

    def rule(self, **rule: Any) -> None:
        self.rules.append(rule)

    def config(self, extra: str = "") -> str:
        self.rules_file.write_text(json.dumps(self.rules))
        env = f'env = {{ FAKE_CLAUDE_RULES = "{self.rules_file}", FAKE_CLAUDE_LOG = "{self.log}" }}'
        out = ""
        for name, role in (("coder", "implementer"), ("reviewer", "validator")):
            out += (
                f'[agent_types.{name}]\nkind = "claude"\nbinary = "{FAKE_CLAUDE}"\n'
                f'args = ["--verbose"]\nrole = "{role}"\n{env}\n\n'
            )
        out += (
            '[agent_types.pytest]\nkind = "check"\n'
            f'exec = ["{sys.executable}", "-m", "pytest", "-q", "-p", "no:cacheprovider"]\n'
            'role = "validator"\nrequired = true\n\n'
        )
        return out + extra

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def implementer_calls(self) -> list[dict[str, Any]]:
        return [c for c in self.calls() if REVIEW not in c["prompt"]]


@pytest.fixture
def agents(tmp_path: Path) -> Agents:
    return Agents(tmp_path)


async def start(daemon_factory: DaemonFactory, config: str) -> Daemon:
    return await daemon_factory(config_text=config, **FAST)


async def run_to_rest(cfn: AsyncClient, events: list[Any] | None = None, **args: Any) -> Any:
    """Start a run and follow it until it finishes or escalates; return its info."""
    info = await cfn.call("loop.start", **args)
    async with cfn.stream("loop.follow", {"run": info.id}) as stream:
        async for ev in stream:
            if events is not None:
                events.append(ev)
    return await cfn.call("loop.status", run=info.id)


def fix(times: int = 1, **more: Any) -> dict[str, Any]:
    return {
        "match": TASK,
        "times": times,
        "edits": [{"path": "calc.py", "replace": ["a - b", "a + b"]}],
        "result": 'Fix add: it subtracted.\n{"confidence": 0.9}',
        **more,
    }


def add_test(times: int = 1) -> dict[str, Any]:
    return {
        "match": TASK,
        "times": times,
        "edits": [
            {
                "path": "test_extra.py",
                "write": "from calc import add\n\n\ndef test_add_zero():\n"
                "    assert add(0, 7) == 7\n",
            }
        ],
        "result": 'Add a test for zero.\n{"confidence": 0.85}',
    }


def reviewer_approves_the_fix() -> list[dict[str, Any]]:
    # Approves only when the prompt carries the change itself: the fixed line in the patch.
    return [
        {"match": REVIEW, "regex": r"\+    return a \+ b", "result": APPROVE},
        {"match": REVIEW, "result": REJECT},
    ]


def suite_passes(repo: Path) -> bool:
    return subprocess.run(PYTEST.split(), cwd=repo, capture_output=True).returncode == 0


def tree_file(repo: Path, commit: str, path: str) -> str:
    return git(repo, "show", f"{commit}:{path}")


async def test_two_implementers_merge_pass_checks_and_apply(
    daemon_factory: DaemonFactory, repo: Path, agents: Agents, tmp_path: Path
) -> None:
    agents.rule(**fix())
    agents.rule(**add_test())
    for r in reviewer_approves_the_fix():
        agents.rule(**r)
    d = await start(daemon_factory, agents.config())
    user_head = git(repo, "rev-parse", "HEAD")
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.swarm_init("mesh", 12, name="ws1")
        info = await run_to_rest(
            cfn, task=TASK, repo=str(repo), checks=[PYTEST],
            implementers=["coder", "coder"],
            validators=["reviewer", "reviewer", "reviewer", "pytest"],
        )  # fmt: skip
        assert (info.status, info.decision) == ("done", "PROCEED"), info.outcome_reason
        assert info.branch == f"cfn/{info.id}/candidate"
        assert info.commit and info.base == user_head
        # The candidate holds both changes: the fix and the new test.
        assert "a + b" in tree_file(repo, info.commit, "calc.py")
        assert "test_add_zero" in tree_file(repo, info.commit, "test_extra.py")
        # One branch per implementer, each commit authored by cfn <agent>.
        for agent in info.implementers:
            branch = f"cfn/{info.id}/{agent}"
            assert git(repo, "log", "-1", "--format=%an", branch) == f"cfn {agent}"
        # Implementers worked in separate worktrees outside the user's tree, with edit
        # permission; reviewers without it.
        impl = agents.implementer_calls()
        assert len({c["cwd"] for c in impl}) == 2
        assert all(not c["cwd"].startswith(str(repo)) for c in impl)
        for call in impl:
            argv = call["argv"]
            assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
            assert "--verbose" in argv  # args from [agent_types.coder] pass through
            assert call["env"]["CFN_WORKSPACE"] == call["cwd"]
        reviews = [c for c in agents.calls() if REVIEW in c["prompt"]]
        assert len(reviews) == 3
        assert all("acceptEdits" not in c["argv"] for c in reviews)
        assert all("test_add_zero" in c["prompt"] for c in reviews)  # the patch itself
        # The user's tree and branch were not touched...
        assert git(repo, "rev-parse", "HEAD") == user_head
        assert git(repo, "status", "--porcelain") == ""
        assert "a - b" in (repo / "calc.py").read_text()
        # ...until `loop apply` merges the result.
        applied = await cfn.loop_apply(info.id)
        assert applied.applied and applied.branch == info.branch
    assert "a + b" in (repo / "calc.py").read_text()
    assert (repo / "test_extra.py").exists()
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert suite_passes(repo)


async def test_vapor_claims_fail_the_gate(
    daemon_factory: DaemonFactory, repo: Path, agents: Agents
) -> None:
    agents.rule(match=TASK, result='All done, trust me.\n{"confidence": 0.95}')
    d = await start(daemon_factory, agents.config())
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.swarm_init("mesh", 6, name="vapor")
        info = await run_to_rest(
            cfn, task=TASK, repo=str(repo), implementers=["coder"],
            validators=["reviewer", "reviewer"], max_loop3=1,
        )  # fmt: skip
    assert info.status == "escalated"
    assert info.outcome_reason == "gate failed 1 times in round 1"
    assert "claimed 0.95, changed 0 files" in info.feedback
    assert not [c for c in agents.calls() if REVIEW in c["prompt"]]  # nobody reviewed vapor


async def test_a_failing_check_feeds_back_and_the_session_resumes(
    daemon_factory: DaemonFactory, repo: Path, agents: Agents
) -> None:
    # First try multiplies; the resumed session, told why pytest failed, adds.
    agents.rule(
        match=TASK, times=1, edits=[{"path": "calc.py", "replace": ["a - b", "a * b"]}],
        result='{"confidence": 0.9}',
    )  # fmt: skip
    agents.rule(
        match="New feedback", when_resumed=True,
        edits=[{"path": "calc.py", "replace": ["a * b", "a + b"]}], result='{"confidence": 0.9}',
    )  # fmt: skip
    for r in reviewer_approves_the_fix():
        agents.rule(**r)
    d = await start(daemon_factory, agents.config())
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.swarm_init("mesh", 6, name="fb")
        info = await run_to_rest(
            cfn, task=TASK, repo=str(repo), checks=[PYTEST], implementers=["coder"],
            validators=["reviewer", "reviewer", "reviewer"],
        )  # fmt: skip
    assert (info.status, info.decision) == ("done", "PROCEED"), info.outcome_reason
    first, second = agents.implementer_calls()
    # The check's output tail reached the next prompt...
    assert "failed the evidence gate" in second["prompt"]
    assert "assert 6 == 5" in second["prompt"]
    # ...and the same session was resumed, with only the new feedback.
    argv = second["argv"]
    assert argv[argv.index("--resume") + 1] == first["session_id"]
    assert TASK not in second["prompt"].split("New feedback", 1)[0]
    assert "--resume" not in first["argv"]
    assert info.artifacts  # the check logs and the patch are files in the state dir
    assert all(Path(p).is_file() for p in info.artifacts.values())


async def test_budget_exhausted_escalates_and_launches_nothing_more(
    daemon_factory: DaemonFactory, repo: Path, agents: Agents
) -> None:
    agents.rule(**fix(times=10, cost_usd=0.40))
    agents.rule(match=REVIEW, result=REJECT, cost_usd=0.40)
    d = await start(daemon_factory, agents.config())
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.swarm_init("mesh", 8, name="budget")
        info = await run_to_rest(
            cfn, task=TASK, repo=str(repo), implementers=["coder", "coder"],
            validators=["reviewer", "reviewer", "reviewer"], budget_usd=1.00,
        )  # fmt: skip
        assert info.status == "escalated"
        # 0.80 after the implementers, then the first review's 0.40 crossed the budget.
        spent = info.cost_usd
        assert spent >= 1.0
        assert info.outcome_reason == f"budget exhausted: ${spent:.2f} of $1.00"
        assert sum(info.cost_by_agent.values()) == pytest.approx(spent)
        # Reviews already running finish; the rejection would start round 2, but
        # nothing more is launched: 2 implementers + 3 reviewers, and the run rests.
        await cfn.task_wait(all=True, timeout_s=30)
        status = await cfn.loop_status(info.id)
        assert (status.status, status.loop2_round, status.loop3_iteration) == ("escalated", 1, 1)
    assert len(agents.calls()) == 5


async def test_a_merge_conflict_comes_back_and_the_next_iteration_resolves_it(
    daemon_factory: DaemonFactory, repo: Path, agents: Agents
) -> None:
    agents.rule(**fix(times=1))
    agents.rule(
        match=TASK, times=1, edits=[{"path": "calc.py", "replace": ["a - b", "a + b  # the sum"]}],
        result='{"confidence": 0.9}',
    )  # fmt: skip
    # Told about the conflict, the implementer whose change lost keeps the candidate's line.
    agents.rule(match="conflict", result='Keeping the merged version.\n{"confidence": 0.9}')
    for r in reviewer_approves_the_fix():
        agents.rule(**r)
    d = await start(daemon_factory, agents.config())
    events: list[Any] = []
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.swarm_init("mesh", 8, name="conflict")
        info = await run_to_rest(
            cfn, events, task=TASK, repo=str(repo), checks=[PYTEST],
            implementers=["coder", "coder"], validators=["reviewer", "reviewer", "reviewer"],
        )  # fmt: skip
    assert (info.status, info.decision) == ("done", "PROCEED"), info.outcome_reason
    done = [e["data"] for e in events if e["type"] == "loop.implementer_done"]
    assert len(done) == 4 and all(d["changed_files"] >= 1 for d in done)  # shown by follow
    candidates = [e["data"] for e in events if e["type"] == "loop.candidate"]
    assert [c["ok"] for c in candidates] == [False, True]
    assert "calc.py" in candidates[0]["feedback"]
    assert "<<<<<<<" in candidates[0]["feedback"]
    second_round = agents.implementer_calls()[2:]
    assert len(second_round) == 2
    assert all("<<<<<<<" in c["prompt"] for c in second_round)
    merged = tree_file(repo, info.commit, "calc.py")
    assert "return a + b" in merged and "<<<<<<<" not in merged


async def test_compete_picks_the_best_passing_candidate(
    daemon_factory: DaemonFactory, repo: Path, agents: Agents
) -> None:
    agents.rule(
        match=TASK, times=1, edits=[{"path": "calc.py", "replace": ["a - b", "a * b"]}],
        result='{"confidence": 0.9}',
    )  # fmt: skip
    agents.rule(**fix(times=1))
    agents.rule(
        match=TASK, times=1,
        edits=[
            {"path": "calc.py", "replace": ["a - b", "a + b"]},
            {"path": "test_extra.py", "write": "from calc import add\n\n\ndef test_add_zero():\n"
             "    assert add(0, 7) == 7\n"},
        ],
        result='{"confidence": 0.9}',
    )  # fmt: skip
    agents.rule(match=REVIEW, regex="test_add_zero", result=APPROVE)
    agents.rule(
        match=REVIEW, regex=r"\+    return a \+ b",
        result='{"vote": "approve", "confidence": 0.6, "output": "fine, but untested"}',
    )  # fmt: skip
    agents.rule(match=REVIEW, result=REJECT)
    d = await start(daemon_factory, agents.config())
    events: list[Any] = []
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.swarm_init("mesh", 10, name="compete")
        info = await run_to_rest(
            cfn, events, task=TASK, repo=str(repo), checks=[PYTEST], compete=True,
            implementers=["coder", "coder", "coder"],
            validators=["reviewer", "reviewer", "reviewer"], consensus_threshold=0.5,
        )  # fmt: skip
    assert (info.status, info.decision) == ("done", "PROCEED"), info.outcome_reason
    (ready,) = [e["data"] for e in events if e["type"] == "loop.candidate"]
    assert len(ready["candidates"]) == 2  # the multiplying one failed pytest
    assert info.winner in info.implementers
    assert info.branch == f"cfn/{info.id}/{info.winner}"
    assert "test_add_zero" in tree_file(repo, info.commit, "test_extra.py")
    (record,) = info.rounds
    assert set(record["candidates"]) == set(ready["candidates"])


@pytest.mark.parametrize("how", ["squash", "patch"])
async def test_apply_squash_or_patch_and_refuse_a_dirty_tree(
    daemon_factory: DaemonFactory, repo: Path, agents: Agents, tmp_path: Path, how: str
) -> None:
    agents.rule(**fix())
    for r in reviewer_approves_the_fix():
        agents.rule(**r)
    d = await start(daemon_factory, agents.config())
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.swarm_init("mesh", 6, name="apply")
        info = await run_to_rest(
            cfn, task=TASK, repo=str(repo), implementers=["coder"],
            validators=["reviewer", "reviewer", "reviewer"],
        )  # fmt: skip
        assert info.status == "done"
        (repo / "calc.py").write_text("# my own edit\n")
        with pytest.raises(CfnError, match=r"calc\.py") as err:
            await cfn.loop_apply(info.id, "squash")
        assert err.value.instance_code == "dirty_tree"
        git(repo, "checkout", "--", "calc.py")
        patch = tmp_path / "result.patch"
        result = await cfn.loop_apply(info.id, how, file=str(patch) if how == "patch" else None)
        cleaned = await cfn.loop_clean(info.id)
    if how == "patch":
        assert result.file == str(patch) and "+    return a + b" in patch.read_text()
        assert "a - b" in (repo / "calc.py").read_text()
    else:
        assert "a + b" in (repo / "calc.py").read_text()
        assert git(repo, "log", "-1", "--format=%p").count(" ") == 0  # one parent: squashed
    assert cleaned.branches
    assert not git(repo, "for-each-ref", f"refs/heads/cfn/{info.id}/")
    assert all(not Path(p).exists() for p in cleaned.worktrees)


async def test_bad_workspace_arguments_get_clear_errors(
    daemon_factory: DaemonFactory, tmp_path: Path, agents: Agents
) -> None:
    ghost = '[agent_types.ghost]\nkind = "claude"\nbinary = "/nonexistent/claude"\n'
    d = await start(daemon_factory, agents.config(ghost))
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.swarm_init("mesh", 6, name="bad")
        with pytest.raises(CfnError) as err:
            await cfn.loop_start(TASK, repo=str(tmp_path), implementers=["coder"])
        assert err.value.instance_code == "not_a_git_repo"
        assert str(tmp_path) in err.value.message
        with pytest.raises(CfnError, match="--repo") as err:
            await cfn.loop_start(TASK, checks=[PYTEST], implementers=["coder"])
        assert err.value.instance_code == "invalid_args"
        with pytest.raises(CfnError, match="not found") as err:
            await cfn.loop_start(TASK, implementers=["ghost"])
        assert "npm install -g @anthropic-ai/claude-code" in err.value.message
        assert (await cfn.loop_list()).runs == []  # nothing was started
        with pytest.raises(CfnError, match="/nonexistent/claude") as err:
            await cfn.agent_create("ghost")
        assert err.value.instance_code == "invalid_args"
        assert (await cfn.agent_list()).agents == []


async def test_retention_removes_a_finished_runs_worktrees_and_branches(
    daemon_factory: DaemonFactory, repo: Path, agents: Agents
) -> None:
    agents.rule(**fix())
    for r in reviewer_approves_the_fix():
        agents.rule(**r)
    d = await daemon_factory(
        config_text=agents.config(), **FAST, **{"loop.workspace_retention_s": 0.5}
    )
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.swarm_init("mesh", 6, name="retain")
        info = await run_to_rest(
            cfn, task=TASK, repo=str(repo), implementers=["coder"],
            validators=["reviewer", "reviewer", "reviewer"],
        )  # fmt: skip
        assert info.status == "done"
        async with cfn.events_follow(since_ms=info.created_ms, types=["loop.cleaned"]) as events:
            async for event in events:
                if event.data["run"] == info.id:
                    break
        assert event.data["branches"] >= 2
    assert not git(repo, "for-each-ref", f"refs/heads/cfn/{info.id}/")
    listed = git(repo, "worktree", "list", "--porcelain")
    assert info.id not in listed
    assert git(repo, "status", "--porcelain") == ""


@pytest.mark.timeout(180)  # phases of 10 s each, on a loaded machine
async def test_a_hung_check_is_cut_off_by_the_phase_deadline(
    daemon_factory: DaemonFactory, repo: Path, agents: Agents
) -> None:
    # A check that never ends (no time limit of its own) must not hang the run.
    agents.rule(**fix(times=5))
    for r in reviewer_approves_the_fix():
        agents.rule(**r)
    # Room for the implementer phase on a loaded machine (2 s was not: the run escalated
    # before any check began); the hung check is still cut off far before its 300 s.
    d = await daemon_factory(config_text=agents.config(), **{**FAST, "loop.phase_timeout_s": 10.0})
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.swarm_init("mesh", 6, name="hung")
        info = await run_to_rest(
            cfn, task=TASK, repo=str(repo), checks=["sleep 300"], implementers=["coder"],
            validators=["reviewer", "reviewer", "reviewer"], max_loop3=1, max_loop2=1,
        )  # fmt: skip
        checks = [
            t for t in (await cfn.call("task.list", swarm="hung", limit=100)).tasks
            if t.context.get("kind") == "check"
        ]  # fmt: skip
    assert info.status in ("escalated", "failed"), info
    assert checks and all(t.status == "failed" for t in checks), checks
