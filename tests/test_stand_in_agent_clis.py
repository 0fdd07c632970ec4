"""The stand-in Claude Code and Codex CLIs (tests/agents; the real ones are not installed
here) behave like the real ones. No daemon is involved: cfnd is never faked."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

AGENTS = Path(__file__).parent / "agents"
FAKE_CLAUDE = AGENTS / "fake_claude.py"
FAKE_CODEX = AGENTS / "fake_codex.py"

Run = Callable[..., subprocess.CompletedProcess[str]]


def make_runner(script: Path, prefix: str, tmp_path: Path, work: Path) -> Run:
    log = tmp_path / f"{prefix.lower()}.log"
    rules_file = tmp_path / f"{prefix.lower()}-rules.json"

    def run(
        *args: str,
        rules: list[dict[str, Any]] | None = None,
        stdin: str | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        if rules is not None:
            rules_file.write_text(json.dumps(rules))
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CFN_", "FAKE_"))},
            f"FAKE_{prefix}_LOG": str(log),
            f"FAKE_{prefix}_RULES": str(rules_file),
            **(env or {}),
        }
        return subprocess.run(
            [str(script), *args],
            cwd=cwd or work,
            env=full_env,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=30,
        )

    rules_file.write_text("[]")
    return run


def log_lines(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    path = tmp_path / f"{name}.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "src").mkdir()
    (path / "src" / "app.py").write_text("VALUE = 1\n")
    return path


@pytest.fixture
def claude(tmp_path: Path, work: Path) -> Run:
    return make_runner(FAKE_CLAUDE, "CLAUDE", tmp_path, work)


@pytest.fixture
def codex(tmp_path: Path, work: Path) -> Run:
    return make_runner(FAKE_CODEX, "CODEX", tmp_path, work)


def envelope(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, "json output is exactly one object"
    value = json.loads(lines[0])
    assert isinstance(value, dict)
    return value


WRITE_RULE = {"match": "add docs", "edits": [{"path": "docs/new.md", "write": "# New\n"}]}


# ---------------------------------------------------------------------------- claude


def test_claude_version_and_executable() -> None:
    assert os.access(FAKE_CLAUDE, os.X_OK) and os.access(FAKE_CODEX, os.X_OK)
    done = subprocess.run([str(FAKE_CLAUDE), "--version"], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "1.0.99 (Claude Code)\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "x", "--bogus"], "unknown option '--bogus'"),
        (["-p", "x", "--output-format", "xml"], "argument 'xml' is invalid"),
        (["-p", "x", "--permission-mode", "yolo"], "argument 'yolo' is invalid"),
        (["-p", "x", "--max-turns", "many"], "argument 'many' is invalid"),
        (["-p", "x", "--model"], "argument missing"),
        (["-p"], "Input must be provided"),
        (["-p", "x", "--output-format", "stream-json"], "requires --verbose"),
    ],
)
def test_claude_rejects_bad_command_lines(claude: Run, args: list[str], message: str) -> None:
    done = claude(*args)
    assert done.returncode == 1
    assert message in done.stderr
    assert done.stdout == ""


def test_claude_records_argv_env_and_prompt(claude: Run, tmp_path: Path, work: Path) -> None:
    args = ["-p", "do the task", "--output-format", "json", "--model", "opus", "--verbose"]
    done = claude(*args, env={"CFN_TASK_ID": "t-1", "CFN_SWARM": "s", "OTHER_SECRET": "no"})
    env_json = envelope(done)
    (record,) = log_lines(tmp_path, "claude")
    assert record["argv"] == args
    assert record["cwd"] == str(work)
    assert record["env"] == {"CFN_TASK_ID": "t-1", "CFN_SWARM": "s"}
    assert record["prompt"] == "do the task"
    assert isinstance(record["time"], float)
    assert record["session_id"] == env_json["session_id"]


def test_claude_json_envelope(claude: Run) -> None:
    rules = [
        {
            "match": "review",
            "result": 'Looks fine.\n{"confidence": 0.9, "vote": "approve"}',
            "cost_usd": 0.4,
        }
    ]
    out = envelope(claude("-p", "please review this", "--output-format", "json", rules=rules))
    assert out["type"] == "result" and out["subtype"] == "success"
    assert out["is_error"] is False
    assert out["result"].endswith('{"confidence": 0.9, "vote": "approve"}')
    assert out["total_cost_usd"] == 0.4
    assert out["num_turns"] == 1 and out["permission_denials"] == []
    assert isinstance(out["duration_ms"], int) and isinstance(out["duration_api_ms"], int)
    assert set(out["usage"]) == {
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "output_tokens",
    }
    uuid.UUID(out["session_id"])

    default = envelope(claude("-p", "unmatched", "--output-format", "json"))
    assert default["result"] == '{"confidence": 0.5}'


def test_claude_error_rule_and_exit_code(claude: Run) -> None:
    rules = [{"match": "boom", "result": "it broke", "is_error": True, "exit": 3, "stderr": "E!"}]
    done = claude("-p", "boom", "--output-format", "json", rules=rules)
    assert done.returncode == 3 and "E!" in done.stderr
    out = json.loads(done.stdout)
    assert out["is_error"] is True and out["subtype"] == "error_during_execution"


def test_claude_text_output_and_stdin_prompt(claude: Run, tmp_path: Path) -> None:
    rules = [{"match": "from stdin", "result": "plain answer"}]
    done = claude("-p", rules=rules, stdin="prompt from stdin\n")
    assert (done.returncode, done.stdout) == (0, "plain answer\n")
    assert log_lines(tmp_path, "claude")[0]["prompt"] == "prompt from stdin\n"


def test_claude_refuses_edits_without_permission(claude: Run, work: Path) -> None:
    out = envelope(claude("-p", "add docs", "--output-format", "json", rules=[WRITE_RULE]))
    assert not (work / "docs" / "new.md").exists()
    (denial,) = out["permission_denials"]
    assert denial["tool_name"] == "Write"
    assert denial["tool_input"]["file_path"] == str(work / "docs" / "new.md")
    assert denial["tool_use_id"].startswith("toolu_")
    assert "denied" in out["result"]


@pytest.mark.parametrize(
    ("flags", "written"),
    [
        (["--permission-mode", "acceptEdits"], True),
        (["--permission-mode", "bypassPermissions"], True),
        (["--dangerously-skip-permissions"], True),
        (["--allowedTools", "Read,Write"], True),
        (["--allowed-tools", "Read", "Write"], True),
        (["--allowedTools", "Write(docs/*)"], True),
        (["--allowedTools", "Write(src/*)"], False),
        (["--allowedTools", "Edit"], False),  # creating a file is Write
        (["--permission-mode", "plan", "--allowedTools", "Write"], False),
        (["--permission-mode", "default"], False),
        (["--dangerously-skip-permissions", "--disallowedTools", "Write"], False),
    ],
)
def test_claude_permission_modes(claude: Run, work: Path, flags: list[str], written: bool) -> None:
    out = envelope(claude("-p", "add docs", "--output-format", "json", *flags, rules=[WRITE_RULE]))
    assert (work / "docs" / "new.md").exists() is written
    assert bool(out["permission_denials"]) is not written


def test_claude_edit_kinds_and_escape(claude: Run, work: Path, tmp_path: Path) -> None:
    rules = [
        {
            "match": "edit",
            "edits": [
                {"path": "src/app.py", "replace": ["VALUE = 1", "VALUE = 2"]},
                {"path": "src/app.py", "append": "EXTRA = 3\n"},
                {"path": "../outside.txt", "write": "escaped"},
                {"path": str(work / "abs.txt"), "write": "absolute inside"},
            ],
        }
    ]
    accept = ["--output-format", "json", "--permission-mode", "acceptEdits"]
    out = envelope(claude("-p", "edit", *accept, rules=rules))
    assert (work / "src" / "app.py").read_text() == "VALUE = 2\nEXTRA = 3\n"
    assert (work / "abs.txt").read_text() == "absolute inside"
    assert not (tmp_path / "outside.txt").exists()
    assert [d["tool_input"]["file_path"] for d in out["permission_denials"]] == [
        str(work / "../outside.txt")
    ]

    delete = [{"match": "rm", "edits": [{"path": "src/app.py", "delete": True}]}]
    out = envelope(claude("-p", "rm", *accept, rules=delete))
    assert (work / "src" / "app.py").exists()  # acceptEdits does not cover Bash
    assert out["permission_denials"][0]["tool_name"] == "Bash"
    claude("-p", "rm", "--allowedTools", "Bash(rm:*)", rules=delete)
    assert not (work / "src" / "app.py").exists()


def test_claude_resume_keeps_session(claude: Run, tmp_path: Path) -> None:
    rules = [
        {"match": "fix", "when_resumed": False, "result": "fresh"},
        {"match": "fix", "when_resumed": True, "result": "resumed"},
    ]
    first = envelope(claude("-p", "fix it", "--output-format", "json", rules=rules))
    assert first["result"] == "fresh"
    again = envelope(
        claude("-p", "fix it", "--output-format", "json", "--resume", first["session_id"])
    )
    assert (again["session_id"], again["result"]) == (first["session_id"], "resumed")
    cont = envelope(claude("-p", "fix it", "--output-format", "json", "--continue"))
    assert cont["session_id"] == first["session_id"]
    unknown = claude("-p", "fix it", "--output-format", "json", "-r", str(uuid.uuid4()))
    assert unknown.returncode == 1 and "No conversation found" in unknown.stderr
    assert [r["resumed"] for r in log_lines(tmp_path, "claude")] == [False, True, True]


def test_claude_rule_counters_and_roles(claude: Run) -> None:
    rules = [
        {"regex": r"^implement \w+$", "times": 1, "result": "first try"},
        {"match": "implement", "role": "security reviewer", "result": "as reviewer"},
        {"match": "implement", "result": "later tries"},
    ]
    results = [
        envelope(claude("-p", "implement auth", "--output-format", "json", rules=rules))["result"]
        for _ in range(3)
    ]
    assert results == ["first try", "later tries", "later tries"]
    reviewer = claude(
        "-p", "implement auth", "--append-system-prompt", "You are the security reviewer."
    )
    assert reviewer.stdout == "as reviewer\n"


def test_claude_stream_json_and_max_turns(claude: Run, work: Path) -> None:
    rules = [
        {
            "match": "three",
            "edits": [{"path": f"f{i}.txt", "write": str(i)} for i in range(3)],
            "result": "done",
        }
    ]
    args = ["-p", "three edits", "--output-format", "stream-json", "--verbose"]
    done = claude(*args, "--permission-mode", "acceptEdits", rules=rules)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0]["type"] == "system" and events[0]["subtype"] == "init"
    assert events[-1]["type"] == "result" and events[-1]["result"] == "done"
    uses = [
        c["name"]
        for e in events
        if e["type"] == "assistant"
        for c in e["message"]["content"]
        if c["type"] == "tool_use"
    ]
    assert uses == ["Write", "Write", "Write"]
    assert {e["session_id"] for e in events} == {events[0]["session_id"]}

    for i in range(3):
        (work / f"f{i}.txt").unlink()
    accept = ["--output-format", "json", "--permission-mode", "acceptEdits"]
    out = envelope(claude("-p", "three", *accept, "--max-turns", "2"))
    assert (out["subtype"], out["is_error"], out["num_turns"]) == ("error_max_turns", True, 2)
    assert sorted(p.name for p in work.glob("f*.txt")) == ["f0.txt", "f1.txt"]


def test_claude_hang_until_killed(tmp_path: Path, work: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"match": "stall", "hang": True}]))
    env = {**os.environ, "FAKE_CLAUDE_RULES": str(rules), "FAKE_CLAUDE_LOG": str(tmp_path / "l")}
    with subprocess.Popen(
        [str(FAKE_CLAUDE), "-p", "stall"],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        assert proc.stderr.readline() == "fake agent: hanging until killed\n"
        assert json.loads((tmp_path / "l").read_text())["pid"] == proc.pid
        proc.kill()
    assert proc.returncode == -9


# ---------------------------------------------------------------------------- codex


def codex_events(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in done.stdout.splitlines()]


def agent_text(events: Sequence[dict[str, Any]]) -> str:
    (item,) = [
        e["item"]
        for e in events
        if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"
    ]
    return str(item["text"])


def test_codex_version_and_bad_arguments(codex: Run) -> None:
    done = codex("--version")
    assert (done.returncode, done.stdout) == (0, "codex-cli 0.46.0\n")
    bad = codex("exec", "--bogus", "x")
    assert bad.returncode == 2 and "unexpected argument '--bogus' found" in bad.stderr
    bad = codex("exec", "--sandbox", "wide-open", "x")
    assert bad.returncode == 2 and "possible values: read-only" in bad.stderr


def test_codex_requires_a_git_repo(codex: Run, tmp_path: Path, work: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    done = codex("exec", "--json", "hello", cwd=plain)
    assert done.returncode == 1 and "--skip-git-repo-check" in done.stderr
    assert codex("exec", "--json", "--skip-git-repo-check", "hi", cwd=plain).returncode == 0
    moved = codex("exec", "--json", "-C", str(work), "hi", cwd=plain)
    assert moved.returncode == 0 and log_lines(tmp_path, "codex")[-1]["cwd"] == str(work)


def test_codex_json_events_and_log(codex: Run, tmp_path: Path) -> None:
    rules = [{"match": "summarise", "result": "summary text"}]
    args = ["exec", "--json", "--model", "o4", "summarise it"]
    done = codex(*args, rules=rules, env={"CFN_AGENT_ID": "coder-1"})
    assert done.returncode == 0, done.stderr
    events = codex_events(done)
    assert [e["type"] for e in events] == [
        "thread.started",
        "turn.started",
        "item.completed",
        "turn.completed",
    ]
    uuid.UUID(events[0]["thread_id"])
    assert agent_text(events) == "summary text"
    assert set(events[-1]["usage"]) == {"input_tokens", "cached_input_tokens", "output_tokens"}
    (record,) = log_lines(tmp_path, "codex")
    assert record["argv"] == args and record["env"] == {"CFN_AGENT_ID": "coder-1"}
    assert (record["prompt"], record["sandbox"]) == ("summarise it", "read-only")
    assert record["thread_id"] == events[0]["thread_id"]


@pytest.mark.parametrize(
    ("flags", "written"),
    [
        ([], False),
        (["--sandbox", "read-only"], False),
        (["-s", "workspace-write"], True),
        (["--sandbox=danger-full-access"], True),
        (["--full-auto"], True),
        (["--dangerously-bypass-approvals-and-sandbox"], True),
        (["-c", 'sandbox_mode="workspace-write"'], True),
    ],
)
def test_codex_sandbox_controls_edits(
    codex: Run, work: Path, flags: list[str], written: bool
) -> None:
    done = codex("exec", "--json", *flags, "add docs", rules=[WRITE_RULE])
    events = codex_events(done)
    assert (work / "docs" / "new.md").exists() is written
    (change,) = [e["item"] for e in events if e.get("item", {}).get("type") == "file_change"]
    assert change["status"] == ("completed" if written else "failed")
    assert change["changes"] == [{"path": str(work / "docs" / "new.md"), "kind": "add"}]
    assert ("sandbox is" in agent_text(events)) is not written


def test_codex_resume_keeps_thread(codex: Run, tmp_path: Path, work: Path) -> None:
    rules = [
        {"match": "go", "when_resumed": False, "result": "new"},
        {"match": "go", "when_resumed": True, "result": "continued"},
    ]
    first = codex_events(codex("exec", "--json", "go", rules=rules))
    thread = first[0]["thread_id"]
    again = codex_events(codex("exec", "resume", "--json", thread, "go on"))
    assert again[0]["thread_id"] == thread and agent_text(again) == "continued"
    last = codex_events(codex("exec", "--json", "resume", "--last", "go"))
    assert last[0]["thread_id"] == thread
    unknown = codex("exec", "resume", str(uuid.uuid4()), "go")
    assert unknown.returncode == 1


def test_codex_errors_text_mode_and_last_message(codex: Run, tmp_path: Path) -> None:
    rules = [
        {"match": "fail", "result": "model exploded", "is_error": True},
        {"match": "ok", "result": "all good", "times": 1},
    ]
    failed = codex("exec", "--json", "fail now", rules=rules)
    assert failed.returncode == 1
    assert codex_events(failed)[-1] == {
        "type": "turn.failed",
        "error": {"message": "model exploded"},
    }
    last = tmp_path / "last.txt"
    done = codex("exec", "-o", str(last), "ok go")
    assert (done.returncode, done.stdout) == (0, "all good\n")
    assert "session id:" in done.stderr and last.read_text() == "all good"
    # The "ok" rule was for one call only; from now on the default answer comes back.
    assert agent_text(codex_events(codex("exec", "ok", "--json"))) == '{"confidence": 0.5}'
    from_stdin = codex("exec", "-", stdin="ok from stdin")
    assert from_stdin.stdout == '{"confidence": 0.5}\n'
    assert log_lines(tmp_path, "codex")[-1]["prompt"] == "ok from stdin"
