"""The claude / codex presets and check validators, against real processes: the stand-in
CLIs in tests/agents record what they were called with and honour permissions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cfn_client.api import AsyncClient
from cfn_daemon.agent import types as agent_types
from cfn_daemon.agent.checks import binary_version, output_tail
from cfn_daemon.agent.executors import ExecutorConfig, TaskInput, run_task
from cfn_daemon.agent.presets import READ_ONLY_TOOLS, ROLE_CONTRACTS, find_answer
from cfn_daemon.agent.runtime import to_result
from cfn_daemon.core.votes import vote_from_result
from cfn_daemon.settings.schema import AgentTypeConfig
from tests.conftest import DaemonFactory

AGENTS = Path(__file__).parent / "agents"
FAKE_CLAUDE = str(AGENTS / "fake_claude.py")
FAKE_CODEX = str(AGENTS / "fake_codex.py")
WRITE_RULE = {"match": "add docs", "edits": [{"path": "docs/new.md", "write": "# New\n"}]}


class Fake:
    """One stand-in CLI: its rules, its call log and the env that points it at them."""

    def __init__(self, tmp_path: Path, prefix: str) -> None:
        self.log = tmp_path / f"{prefix.lower()}.log"
        self.rules = tmp_path / f"{prefix.lower()}-rules.json"
        self.rules.write_text("[]")
        self.env = {f"FAKE_{prefix}_LOG": str(self.log), f"FAKE_{prefix}_RULES": str(self.rules)}

    def set_rules(self, *rules: dict[str, Any]) -> None:
        self.rules.write_text(json.dumps(list(rules)))

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def claude(tmp_path: Path) -> Fake:
    return Fake(tmp_path, "CLAUDE")


@pytest.fixture
def codex(tmp_path: Path) -> Fake:
    return Fake(tmp_path, "CODEX")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def task(text: str = "add docs", **context: Any) -> TaskInput:
    return TaskInput(
        task_id="t-1", swarm="s1", agent_id="a-1", agent_type="x", text=text, context=context
    )


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


# --------------------------------------------------------------------------- claude argv


async def test_claude_implementer_argv_cwd_and_env(claude: Fake, workspace: Path) -> None:
    cfg = ExecutorConfig(kind="claude", binary=FAKE_CLAUDE, env=claude.env, model="opus")
    cfg = msgspec.structs.replace(cfg, max_turns=7)
    res = await run_task(cfg, task(kind="implement", workspace=str(workspace), base_ref="main"))
    assert res.ok, res.error
    (call,) = claude.calls()
    argv = call["argv"]
    assert argv[:4] == ["-p", "add docs", "--output-format", "json"]
    assert option(argv, "--permission-mode") == "acceptEdits"
    assert option(argv, "--append-system-prompt") == ROLE_CONTRACTS["implementer"]
    assert (option(argv, "--model"), option(argv, "--max-turns")) == ("opus", "7")
    assert "--allowedTools" not in argv and "--resume" not in argv
    assert call["cwd"] == str(workspace)
    assert call["env"]["CFN_WORKSPACE"] == str(workspace)
    assert call["env"]["CFN_BASE_REF"] == "main"
    assert call["env"]["CFN_TASK_ID"] == "t-1"


@pytest.mark.parametrize(
    ("context", "contract"),
    [
        ({"kind": "validate"}, "validator"),
        ({"kind": "decide"}, "owner"),
        ({"kind": "implement", "read_only": True}, "implementer"),
    ],
)
async def test_claude_read_only_roles_get_read_tools_only(
    claude: Fake, context: dict[str, Any], contract: str
) -> None:
    cfg = ExecutorConfig(
        kind="claude", binary=FAKE_CLAUDE, env=claude.env, allowed_tools=["Bash(pytest:*)"]
    )
    assert (await run_task(cfg, task(**context))).ok
    argv = claude.calls()[0]["argv"]
    assert option(argv, "--permission-mode") == "default"
    assert "acceptEdits" not in argv
    assert option(argv, "--allowedTools") == ",".join([*READ_ONLY_TOOLS, "Bash(pytest:*)"])
    assert ROLE_CONTRACTS[contract] in str(option(argv, "--append-system-prompt"))


async def test_claude_permission_mode_and_prompt_starting_with_dash(claude: Fake) -> None:
    cfg = ExecutorConfig(
        kind="claude", binary=FAKE_CLAUDE, env=claude.env, permission_mode="bypassPermissions"
    )
    res = await run_task(cfg, task("--help is not an option here"))
    assert res.ok, res.error
    (call,) = claude.calls()
    assert option(call["argv"], "--permission-mode") == "bypassPermissions"
    assert call["prompt"].strip() == "--help is not an option here"


async def test_claude_resume_session(claude: Fake, workspace: Path) -> None:
    claude.set_rules(
        {"match": "fix", "when_resumed": False, "result": '{"confidence": 0.4}'},
        {"match": "fix", "when_resumed": True, "result": '{"confidence": 0.9}'},
    )
    cfg = ExecutorConfig(kind="claude", binary=FAKE_CLAUDE, env=claude.env)
    first = await run_task(cfg, task("fix it", kind="implement", workspace=str(workspace)))
    assert first.session_id and first.confidence == 0.4
    again = await run_task(cfg, task("fix it", kind="implement", resume_session=first.session_id))
    assert (again.ok, again.session_id, again.confidence) == (True, first.session_id, 0.9)
    assert option(claude.calls()[1]["argv"], "--resume") == first.session_id
    # resume = false in the config: always a fresh session.
    fresh = msgspec.structs.replace(cfg, resume=False)
    res = await run_task(fresh, task("fix it", resume_session=first.session_id))
    assert "--resume" not in claude.calls()[2]["argv"] and res.session_id != first.session_id


async def test_claude_unknown_session_starts_a_new_one(claude: Fake) -> None:
    cfg = ExecutorConfig(kind="claude", binary=FAKE_CLAUDE, env=claude.env)
    res = await run_task(cfg, task("go", resume_session="0000-gone"))
    assert res.ok, res.error
    assert "resuming session 0000-gone failed" in res.stderr
    assert "No conversation found" in res.stderr
    assert [option(c["argv"], "--resume") for c in claude.calls()] == [None]  # fails pre-log
    assert res.session_id and res.session_id != "0000-gone"


# --------------------------------------------------------------------------- config


async def test_agent_type_config_passes_through_resolve(claude: Fake, tmp_path: Path) -> None:
    table = AgentTypeConfig(
        kind="claude",
        binary=FAKE_CLAUDE,
        args=["--verbose", "--disallowedTools", "Bash(rm:*)"],
        model="sonnet",
        max_turns=3,
        env=claude.env,
        workdir=str(tmp_path),
        max_output_bytes=4096,
        usd_per_mtok_input=1.0,
        required=True,
        role="validator",
    )
    spec = agent_types.resolve("rev", {"rev": table})
    assert spec.required and spec.role == "validator"
    assert spec.executor.max_output_bytes == 4096 and spec.executor.usd_per_mtok_input == 1.0
    assert agent_types.decode(agent_types.encode(spec)) == spec
    assert (await run_task(spec.executor, task())).ok
    (call,) = claude.calls()
    assert call["argv"][-3:] == ["--verbose", "--disallowedTools", "Bash(rm:*)"]
    assert option(call["argv"], "--model") == "sonnet"
    assert call["cwd"] == str(tmp_path)  # no workspace in the context: workdir


def test_every_agent_type_key_reaches_the_executor() -> None:
    spec_only = agent_types.SPEC_KEYS
    for key in AgentTypeConfig.__struct_fields__:
        assert key in spec_only or key in ExecutorConfig.__struct_fields__, key


def test_older_claude_spellings_map_onto_binary_and_args() -> None:
    table = AgentTypeConfig(kind="claude", claude_binary="/opt/claude", claude_args=["-x"])
    executor = agent_types.resolve("c", {"c": table}).executor
    assert (executor.binary, executor.args, executor.program) == (
        "/opt/claude",
        ["-x"],
        "/opt/claude",
    )
    both = AgentTypeConfig(kind="claude", binary="/a", claude_binary="/b")
    with pytest.raises(Exception, match="older spelling of `binary`"):
        agent_types.resolve("c", {"c": both})


def test_published_specs_tolerate_unknown_fields_and_old_spellings() -> None:
    newer = {
        "name": "coder",
        "executor": {"kind": "claude", "future_option": 1, "binary": "/x/claude"},
        "future_field": [1, 2],
    }
    spec = agent_types.decode(json.dumps(newer))
    assert spec.executor.program == "/x/claude"
    # What cfnd versions before the presets published: claude_binary for every kind.
    older = {"name": "w", "executor": {"kind": "command", "exec": ["x"], "claude_binary": "claude"}}
    assert agent_types.decode(json.dumps(older)).executor.binary is None
    # Defaults are not written, so an older agent can decode a plain built-in spec.
    builtin = agent_types.resolve("coder", {})
    assert json.loads(agent_types.encode(builtin)) == {
        "name": "coder",
        "executor": {"kind": "claude"},
    }


# --------------------------------------------------------------------------- claude output


async def test_claude_envelope_cost_tokens_session_and_answer(claude: Fake) -> None:
    claude.set_rules(
        {
            "match": "review",
            "result": 'Two problems.\n```json\n{"vote": "Reject", "confidence": 0.8, "feedback": '
            '[{"severity": "HIGH", "message": "no tests", "location": "a.py:3"}]}\n```\n',
            "cost_usd": 0.37,
        }
    )
    cfg = ExecutorConfig(kind="claude", binary=FAKE_CLAUDE, env=claude.env)
    res = await run_task(cfg, task("please review", kind="validate"))
    assert res.ok, res.error
    assert (res.vote, res.confidence, res.cost_usd, res.num_turns) == ("reject", 0.8, 0.37, 1)
    assert res.output.startswith("Two problems.")
    assert res.session_id == claude.calls()[0]["session_id"]
    assert res.input_tokens > 0 and res.output_tokens > 0
    tr = to_result(res, "a-1", 1)
    assert (tr.session_id, tr.cost_usd, tr.num_turns) == (res.session_id, 0.37, 1)
    assert (tr.input_tokens, tr.output_tokens) == (res.input_tokens, res.output_tokens)
    vote = vote_from_result("a-1", tr, 1)
    assert vote is not None and not vote.approve
    (issue,) = vote.issues
    assert (issue.severity, issue.message, issue.location) == ("high", "no tests", "a.py:3")


async def test_claude_owner_decision_reads_as_owner_answer(claude: Fake) -> None:
    claude.set_rules(
        {
            "match": "decide",
            "result": 'Good.\n{"decision": "proceed", "reason": "all green", "backlog": ["docs"]}',
        }
    )
    cfg = ExecutorConfig(kind="claude", binary=FAKE_CLAUDE, env=claude.env)
    res = await run_task(cfg, task("decide now", kind="decide"))
    assert (res.output, res.feedback) == ("PROCEED: all green", ["docs"])


async def test_claude_errors_are_specific(claude: Fake, tmp_path: Path) -> None:
    claude.set_rules(
        {"match": "three", "edits": [{"path": f"f{i}", "write": "x"} for i in range(3)]},
        {"match": "boom", "result": "it broke", "is_error": True, "exit": 3, "stderr": "E!"},
        {"match": "bad", "result": '{"confidence": 7, "vote": "maybe"}'},
    )
    cfg = ExecutorConfig(
        kind="claude", binary=FAKE_CLAUDE, env=claude.env, max_turns=2, workdir=str(tmp_path)
    )
    res = await run_task(cfg, task("three edits"))
    assert not res.ok and res.error is not None
    assert res.error.startswith("claude reported error_max_turns after 2 turns")
    res = await run_task(cfg, task("boom"))
    assert (res.ok, res.exit_code) == (False, 3)
    assert res.error == "claude reported error_during_execution after 1 turns"
    res = await run_task(cfg, task("bad answer"))  # malformed fields: dropped, not fatal
    assert res.ok and (res.confidence, res.vote) == (None, None)
    assert "ignored `confidence` 7" in res.stderr and "ignored `vote` 'maybe'" in res.stderr
    res = await run_task(msgspec.structs.replace(cfg, args=["--bogus"]), task("x"))
    assert (
        not res.ok
        and res.error == "claude exited with exit status 1: error: unknown option '--bogus'"
    )


async def test_claude_text_output_uses_the_last_line_rule(claude: Fake) -> None:
    claude.set_rules({"match": "old", "result": 'done\n{"confidence": 0.7, "output": "short"}'})
    cfg = ExecutorConfig(
        kind="claude", binary=FAKE_CLAUDE, env=claude.env, args=["--output-format", "text"]
    )
    res = await run_task(cfg, task("old cli"))
    assert (res.ok, res.confidence, res.output, res.session_id) == (True, 0.7, "short", None)


async def test_claude_permissions_validator_cannot_edit_implementer_can(
    claude: Fake, workspace: Path
) -> None:
    claude.set_rules(WRITE_RULE)
    cfg = ExecutorConfig(kind="claude", binary=FAKE_CLAUDE, env=claude.env)
    res = await run_task(cfg, task(kind="validate", workspace=str(workspace)))
    assert res.ok and not (workspace / "docs" / "new.md").exists()
    assert claude.calls()[0]["denied"] == ["docs/new.md"]
    assert "denied 1 tool use(s): Write" in res.stderr
    res = await run_task(cfg, task(kind="implement", workspace=str(workspace)))
    assert res.ok and (workspace / "docs" / "new.md").read_text() == "# New\n"
    assert claude.calls()[1]["applied"] == ["docs/new.md"]


# --------------------------------------------------------------------------- codex


async def test_codex_implementer_and_validator(codex: Fake, workspace: Path) -> None:
    codex.set_rules({**WRITE_RULE, "result": 'ok\n{"confidence": 0.6, "summary": "docs"}'})
    cfg = ExecutorConfig(
        kind="codex",
        binary=FAKE_CODEX,
        env=codex.env,
        model="o4",
        usd_per_mtok_input=2.0,
        usd_per_mtok_output=8.0,
    )
    res = await run_task(cfg, task(kind="validate", workspace=str(workspace), base_ref="main"))
    assert res.ok and not (workspace / "docs" / "new.md").exists()
    res = await run_task(cfg, task(kind="implement", workspace=str(workspace), base_ref="main"))
    assert res.ok, res.error
    assert (workspace / "docs" / "new.md").exists() and res.confidence == 0.6
    val, impl = codex.calls()
    assert (val["sandbox"], impl["sandbox"]) == ("read-only", "workspace-write")
    assert impl["argv"][:3] == ["exec", "--json", "--sandbox"]
    assert option(impl["argv"], "-C") == str(workspace) and option(impl["argv"], "--model") == "o4"
    assert ROLE_CONTRACTS["implementer"] in impl["prompt"] and impl["prompt"].startswith("add docs")
    assert ROLE_CONTRACTS["validator"] in val["prompt"] and "git diff main" in val["prompt"]
    assert impl["cwd"] == str(workspace) and impl["env"]["CFN_WORKSPACE"] == str(workspace)
    assert res.session_id == impl["thread_id"] and res.num_turns == 1
    assert res.input_tokens > 0 and res.output_tokens > 0
    expected = (res.input_tokens * 2.0 + res.output_tokens * 8.0) / 1e6
    assert res.cost_usd == pytest.approx(expected)


async def test_codex_resume_errors_and_no_workspace(codex: Fake, tmp_path: Path) -> None:
    codex.set_rules(
        {"match": "go", "when_resumed": False, "result": "new"},
        {"match": "go", "when_resumed": True, "result": "continued"},
        {"match": "fail", "result": "model exploded", "is_error": True},
    )
    cfg = ExecutorConfig(kind="codex", binary=FAKE_CODEX, env=codex.env, workdir=str(tmp_path))
    first = await run_task(cfg, task("go"))  # tmp_path is no git repo
    assert first.ok and first.output == "new"
    assert "--skip-git-repo-check" in codex.calls()[0]["argv"]
    again = await run_task(cfg, task("go on", resume_session=first.session_id))
    assert (again.output, again.session_id) == ("continued", first.session_id)
    argv = codex.calls()[1]["argv"]
    assert argv[argv.index("resume") + 1] == first.session_id
    failed = await run_task(cfg, task("fail"))
    assert (failed.ok, failed.error) == (False, "codex reported a failed turn: model exploded")


# --------------------------------------------------------------------------- checks


async def test_check_validator_votes_by_exit_status(tmp_path: Path) -> None:
    cfg = ExecutorConfig(kind="check")
    script = 'pwd; echo "$CFN_BASE_REF"; for i in $(seq 1 100); do echo line$i; done; exit 0'
    res = await run_task(cfg, task(script, kind="validate", workspace=str(tmp_path), base_ref="b"))
    assert (res.ok, res.vote, res.confidence) == (True, "approve", 1.0)
    assert res.stdout.startswith(f"{tmp_path}\nb\n")
    failing = "for i in $(seq 1 100); do echo out$i; done; echo boom >&2; exit 4"
    res = await run_task(cfg, task(failing, kind="validate"))
    assert (res.ok, res.vote, res.confidence, res.error) == (True, "reject", 1.0, None)
    (issue,) = res.feedback
    assert issue["severity"] == "high"
    message = issue["message"]
    assert "failed (exit status 4)" in message and message.endswith("out99\nout100\nboom")
    assert "out60\n" not in message  # only the tail: the last 40 lines
    vote = vote_from_result("chk", to_result(res, "chk", 1), 2)
    assert vote is not None and not vote.approve and vote.confidence == 1.0
    assert [i.severity for i in vote.issues] == ["high"]


async def test_command_validator_votes_unless_it_printed_a_vote(tmp_path: Path) -> None:
    silent = ExecutorConfig(kind="command", exec=["sh", "-c", "echo failing; exit 1"])
    res = await run_task(silent, task(kind="validate"))
    assert (res.vote, res.ok) == ("reject", True)
    voting = ExecutorConfig(
        kind="command", exec=["sh", "-c", 'echo \'{"vote": "approve", "confidence": 0.3}\'']
    )
    res = await run_task(voting, task(kind="validate"))
    assert (res.vote, res.confidence) == ("approve", 0.3)
    res = await run_task(silent, task())  # not a validator task: no vote, a failure
    assert (res.ok, res.vote, res.error) == (False, None, "exit status 1")
    shell = await run_task(ExecutorConfig(kind="shell"), task("exit 1", kind="validate"))
    assert shell.vote is None  # only check and command executors vote by exit status


async def test_checker_builtin_runs_the_text_in_the_workspace(tmp_path: Path) -> None:
    spec = agent_types.resolve("checker", {})
    assert (spec.executor, spec.role) == (ExecutorConfig(kind="check"), "validator")
    assert "checker" in agent_types.builtin_names()
    # A check's stdout is not parsed for result JSON: only the exit status counts.
    text = "pwd; echo '{\"ok\": false}'"
    res = await run_task(spec.executor, task(text, kind="check", workspace=str(tmp_path)))
    assert (res.ok, res.vote, res.stdout) == (True, None, f'{tmp_path}\n{{"ok": false}}\n')
    res = await run_task(spec.executor, task("false", kind="check"))
    assert (res.ok, res.error) == (False, "exit status 1")
    argv_cfg = ExecutorConfig(kind="check", exec=["sh", "-c", "exit 0", "{task_id}"])
    assert (await run_task(argv_cfg, task("ignored", kind="validate"))).vote == "approve"


def test_output_tail_caps_lines_and_bytes() -> None:
    assert output_tail("a\nb\n", "c\n") == "a\nb\nc"
    long = "\n".join("x" * 500 for _ in range(30))
    tail = output_tail(long, "")
    assert len(tail.encode()) <= 4096 and tail.endswith("x" * 500) and not tail.startswith("\n")


# --------------------------------------------------------------------------- binaries


def test_binary_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    claude = agent_types.resolve("coder", {})
    problem = agent_types.binary_problem(claude)
    assert problem is not None and "'claude' not found on PATH" in problem
    assert "npm install -g @anthropic-ai/claude-code" in problem
    assert "`binary` in [agent_types.coder]" in problem
    codex = agent_types.resolve("cx", {"cx": AgentTypeConfig(kind="codex")})
    assert "npm install -g @openai/codex" in str(agent_types.binary_problem(codex))
    missing = AgentTypeConfig(kind="command", exec=[str(tmp_path / "nope")])
    message = agent_types.binary_problem(agent_types.resolve("m", {"m": missing}))
    assert message is not None and "not found;" in message and "`exec`" in message
    found = AgentTypeConfig(kind="claude", binary=FAKE_CLAUDE)
    assert agent_types.binary_problem(agent_types.resolve("f", {"f": found})) is None
    # The executor's own env decides the PATH it is looked up on.
    on_path = AgentTypeConfig(kind="command", exec=["fake_claude.py"], env={"PATH": str(AGENTS)})
    assert agent_types.binary_problem(agent_types.resolve("p", {"p": on_path})) is None
    python = AgentTypeConfig(kind="python", entry="m:f")
    assert agent_types.binary_problem(agent_types.resolve("py", {"py": python})) is None


async def test_binary_version(tmp_path: Path) -> None:
    env = {"FAKE_CLAUDE_VERSION": "9.9.9 (Claude Code)"}
    ok, text = await binary_version(ExecutorConfig(kind="claude", binary=FAKE_CLAUDE, env=env))
    assert ok and text == f"{FAKE_CLAUDE}: 9.9.9 (Claude Code)"
    ok, text = await binary_version(ExecutorConfig(kind="codex", binary=str(tmp_path / "no")))
    assert not ok and "not found" in text
    bad = tmp_path / "bad"
    bad.write_text("#!/bin/sh\necho 'no such flag' >&2\nexit 2\n")
    bad.chmod(0o755)
    ok, text = await binary_version(ExecutorConfig(kind="codex", binary=str(bad)))
    assert not ok and text == f"{bad} --version failed (exit status 2): no such flag"


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('done\n{"confidence": 0.9}', {"confidence": 0.9}),
        (
            '{"confidence": 0.9,\n "summary": "multi-line"}',
            {"confidence": 0.9, "summary": "multi-line"},
        ),
        ('x\n```json\n{"vote": "approve"}\n```\nThanks!', {"vote": "approve"}),
        (  # nested: the outer object, not the issue inside it
            'Answer: {"vote": "reject", "feedback": [{"message": "m"}]} ok',
            {"vote": "reject", "feedback": [{"message": "m"}]},
        ),
        ('{"confidence": 0.1}\nthen {"confidence": 0.2}', {"confidence": 0.2}),
        ('code: {"a": 1} and {"b": {"c": 2}}', None),
        ("no json at all", None),
        ('{"broken": ', None),
    ],
)
def test_find_answer(text: str, expected: dict[str, Any] | None) -> None:
    assert find_answer(text) == expected


async def test_doctor_checks_each_agent_type_program(daemon_factory: DaemonFactory) -> None:
    config = (
        f'[agent_types.fake]\nkind = "claude"\nbinary = "{FAKE_CLAUDE}"\n'
        '[agent_types.cx]\nkind = "codex"\nbinary = "/nonexistent/codex"\n'
        '[agent_types.tests]\nkind = "check"\nexec = ["sh", "-c", "true"]\n'
        '[agent_types.inproc]\nkind = "python"\nentry = "m:f"\n'
    )
    d = await daemon_factory(config_text=config)
    async with AsyncClient(d.socket_path, timeout_s=30) as cfn:
        doc = await cfn.call("doctor")
    checks = {c.name: c for c in doc.checks}
    assert "agent_types.inproc" not in checks  # starts no program
    fake = checks["agent_types.fake"]
    assert fake.ok and "1.0.99 (Claude Code)" in fake.detail
    cx = checks["agent_types.cx"]
    assert not cx.ok and not cx.warning and not doc.ok
    assert "npm install -g @openai/codex" in cx.fix and "`binary` in [agent_types.cx]" in cx.fix
    assert checks["agent_types.tests"].ok  # sh need not answer --version
    assert checks["agent_types.builtin"].warning  # the built-in claude types: advice only
