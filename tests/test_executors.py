"""Executors against real subprocesses (small sh/python stand-ins written to tmp_path)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfn_client.wire.errors import ConfigError
from cfn_daemon.agent import proc
from cfn_daemon.agent.executors import (
    ExecResult,
    ExecutorConfig,
    TaskInput,
    builtin_executor,
    parse_executor_config,
    run_task,
    substitute,
)

PY = sys.executable
TASK = TaskInput(task_id="t-1", swarm="s1", agent_id="coder-1", agent_type="coder", text="do it")


def script(tmp_path: Path, body: str, name: str = "child.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


async def run_py(tmp_path: Path, body: str, **cfg: Any) -> ExecResult:
    """Run a python stand-in as a `command` executor."""
    argv = [PY, script(tmp_path, body), *cfg.pop("args", [])]
    return await run_task(ExecutorConfig(kind="command", exec=argv, **cfg), TASK)


def alive(pid: int) -> bool:
    """True while /proc shows the pid as a live (non-zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def assert_gone(*pids: int, within_s: float = 5.0) -> None:
    """Bounded wait for processes to disappear (a killed grandchild is reaped by init)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while [p for p in pids if alive(p)]:
        assert loop.time() < deadline, f"still running: {[p for p in pids if alive(p)]}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def ready(tmp_path: Path) -> AsyncIterator[tuple[str, Callable[[], Any]]]:
    """A FIFO the child writes one line to; ``await wait()`` returns it (no polling)."""
    fifo = tmp_path / "ready.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    wfd = os.open(fifo, os.O_WRONLY)  # our own writer: no EOF before the child writes
    loop = asyncio.get_running_loop()
    got: asyncio.Future[str] = loop.create_future()

    def on_readable() -> None:
        if not got.done():
            got.set_result(os.read(rfd, 4096).decode())

    loop.add_reader(rfd, on_readable)

    async def wait() -> str:
        return await asyncio.wait_for(got, 20)

    try:
        yield str(fifo), wait
    finally:
        loop.remove_reader(rfd)
        os.close(rfd)
        os.close(wfd)


# --------------------------------------------------------------------------- results


async def test_exit_status_decides_without_json(tmp_path: Path) -> None:
    ok = await run_py(tmp_path, "print('all good')")
    assert (ok.ok, ok.exit_code, ok.output, ok.error) == (True, 0, "all good\n", None)
    assert ok.stdout == ok.output and ok.duration_ms > 0
    bad = await run_py(
        tmp_path, "import sys; print('nope'); print('oops', file=sys.stderr); exit(3)"
    )
    assert (bad.ok, bad.exit_code, bad.error) == (False, 3, "exit status 3")
    assert (bad.stdout, bad.stderr) == ("nope\n", "oops\n")


async def test_json_last_line_sets_fields(tmp_path: Path) -> None:
    res = await run_py(
        tmp_path,
        """
        import json
        print("working...")
        print(json.dumps({"output": "patch", "confidence": 0.85, "vote": "approve",
                          "feedback": {"issues": ["nit"]}}))
        print("   ")
        """,
    )
    assert res.ok and res.error is None
    assert (res.output, res.confidence, res.vote) == ("patch", 0.85, "approve")
    assert res.feedback == {"issues": ["nit"]}
    assert res.stdout.startswith("working...\n{")


async def test_json_without_result_keys_or_not_last_is_plain_output(tmp_path: Path) -> None:
    res = await run_py(tmp_path, "print('{\"x\": 1}')")
    assert res.ok and res.output == '{"x": 1}\n' and res.confidence is None
    res = await run_py(tmp_path, "print('{\"confidence\": 0.5}'); print('done')")
    assert res.ok and res.confidence is None and res.output.endswith("done\n")
    res = await run_py(tmp_path, 'print(\'{"output": [1, 2], "confidence": 1}\')')
    assert (res.output, res.confidence) == ("[1,2]", 1.0)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '{"confidence": 1.5}',
            "`confidence` in the last stdout line: expected a number in [0, 1]",
        ),
        ('{"confidence": "high"}', "`confidence` in the last stdout line: expected a number"),
        ('{"confidence": true}', "`confidence` in the last stdout line: expected a number"),
        ('{"vote": "maybe"}', "`vote` in the last stdout line: expected 'approve' or 'reject'"),
        ('{"ok": "yes"}', "`ok` in the last stdout line: expected true or false"),
        ('{"output": "x", oops}', "last stdout line looked like JSON but did not parse: "),
    ],
)
async def test_invalid_json_fields_are_specific_errors(
    tmp_path: Path, line: str, expected: str
) -> None:
    res = await run_py(tmp_path, f"print({line!r})")
    assert not res.ok and res.exit_code == 0
    assert res.error is not None and res.error.startswith(expected), res.error


async def test_ok_in_json_overrides_exit_status(tmp_path: Path) -> None:
    res = await run_py(tmp_path, 'print(\'{"ok": true, "output": "fine"}\'); exit(4)')
    assert (res.ok, res.exit_code, res.output, res.error) == (True, 4, "fine", None)
    res = await run_py(tmp_path, 'print(\'{"ok": false, "feedback": "tests fail"}\')')
    assert (res.ok, res.exit_code, res.feedback) == (False, 0, "tests fail")
    assert res.error == "the task reported ok=false"


# --------------------------------------------------------------------------- argv, stdin, env

DUMP = """
import json, os, sys
env = {k: v for k, v in os.environ.items() if k.startswith(("CFN_", "MY_"))}
print(json.dumps({"output": json.dumps({"argv": sys.argv[1:], "stdin": sys.stdin.read(),
                                        "env": env, "cwd": os.getcwd()})}))
"""


async def test_placeholders_substituted_without_injection(tmp_path: Path) -> None:
    evil = 'say "hi" {task_id} {0} {x} $(touch PWNED); `touch PWNED2` \' {{task}}'
    task = msgspec.structs.replace(TASK, text=evil, attempt=3)
    argv = [PY, script(tmp_path, DUMP), "{task}", "{task_id}", "{swarm}", "{agent_id}"]
    argv += ["{agent_type}", "{attempt}", "x{unknown}y{", "{task_id}-{attempt}", "{{swarm}}"]
    cfg = ExecutorConfig(kind="command", exec=argv, workdir=str(tmp_path))
    res = await run_task(cfg, task)
    assert res.ok, res
    got = msgspec.json.decode(res.output)
    expected = [evil, "t-1", "s1", "coder-1", "coder", "3", "x{unknown}y{", "t-1-3", "{s1}"]
    assert got["argv"] == expected
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()
    assert msgspec.json.decode(got["stdin"], type=TaskInput) == task
    assert got["cwd"] == str(tmp_path)


async def test_env_has_cfn_vars_and_no_redis_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in [v for v in os.environ if v.startswith("CFN_")]:
        monkeypatch.delenv(var)  # e.g. CFN_TEST_REDIS_URL from scripts/test
    monkeypatch.setenv("CFN_REDIS_PASSWORD", "s3cret")
    monkeypatch.setenv("CFN_REDIS_URL", "redis://:s3cret@localhost:6379/0")
    monkeypatch.setenv("MY_INHERITED", "yes")
    cfg = ExecutorConfig(
        kind="command",
        exec=[PY, script(tmp_path, DUMP)],
        env={"MY_EXTRA": "1", "CFN_REDIS_PASSWORD": "again"},
    )
    res = await run_task(cfg, msgspec.structs.replace(TASK, attempt=2))
    env = msgspec.json.decode(res.output)["env"]
    assert env == {
        "CFN_TASK_ID": "t-1",
        "CFN_SWARM": "s1",
        "CFN_AGENT_ID": "coder-1",
        "CFN_AGENT_TYPE": "coder",
        "CFN_ATTEMPT": "2",
        "MY_INHERITED": "yes",
        "MY_EXTRA": "1",
    }


# --------------------------------------------------------------------------- capture


async def test_output_capped_and_last_line_still_parsed(tmp_path: Path) -> None:
    body = """
    import sys
    chunk = b"x" * 65536
    for _ in range(80):  # 5 MiB on each stream
        sys.stdout.buffer.write(chunk)
        sys.stderr.buffer.write(chunk)
    sys.stdout.buffer.write(b'\\n{"confidence": 0.7}\\n')
    """
    res = await run_py(tmp_path, body)
    assert res.truncated and res.ok and res.confidence == 0.7
    assert len(res.stdout) == 1 << 20 and len(res.stderr) == 1 << 20
    small = await run_py(tmp_path, "print('y' * 100)", max_output_bytes=10)
    assert small.truncated and small.stdout == "y" * 10


async def test_child_not_reading_stdin_is_fine(tmp_path: Path) -> None:
    big = msgspec.structs.replace(TASK, text="z" * (4 << 20))  # more than a pipe buffer
    cfg = ExecutorConfig(kind="command", exec=["sh", "-c", "echo quick"])
    res = await run_task(cfg, big)
    assert res.ok and res.stdout == "quick\n"


# --------------------------------------------------------------------------- stopping

GROUP = 'sleep 1000 &\necho "$$ $!" > "$1"\nwait\n'


async def test_timeout_kills_the_process_group(tmp_path: Path, ready: Any) -> None:
    fifo, wait = ready
    cfg = ExecutorConfig(
        kind="command", exec=["sh", script(tmp_path, GROUP, "g.sh"), fifo], timeout_s=1.5
    )
    run = asyncio.create_task(run_task(cfg, TASK))
    leader, grandchild = map(int, (await wait()).split())
    assert alive(leader) and alive(grandchild)
    res = await run
    assert not res.ok and res.error == "timed out after 1.5 s"
    assert res.exit_code == -signal.SIGTERM
    await assert_gone(leader, grandchild)


async def test_cancel_event_stops_a_running_task(tmp_path: Path, ready: Any) -> None:
    fifo, wait = ready
    cancel = asyncio.Event()
    cfg = ExecutorConfig(kind="command", exec=["sh", script(tmp_path, GROUP, "g.sh"), fifo])
    run = asyncio.create_task(run_task(cfg, TASK, cancel=cancel))
    leader, grandchild = map(int, (await wait()).split())
    cancel.set()
    res = await asyncio.wait_for(run, 10)
    assert (res.ok, res.error) == (False, "cancelled")
    await assert_gone(leader, grandchild)
    again = await run_task(cfg, TASK, cancel=cancel)  # already set: nothing is started
    assert (again.ok, again.error, again.exit_code) == (False, "cancelled", None)


async def test_sigterm_ignored_escalates_to_sigkill(tmp_path: Path, ready: Any) -> None:
    fifo, wait = ready
    cancel = asyncio.Event()
    argv = ["sh", script(tmp_path, "trap '' TERM\n" + GROUP, "g.sh"), fifo]
    run = asyncio.create_task(proc.run_process(argv, cancel=cancel, kill_grace_s=0.3))
    leader, grandchild = map(int, (await wait()).split())
    cancel.set()
    out = await asyncio.wait_for(run, 10)
    assert out.stopped == "cancelled" and out.returncode == -signal.SIGKILL
    await assert_gone(leader, grandchild)


async def test_background_leftovers_are_killed_after_exit(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    cfg = ExecutorConfig(kind="shell")
    task = msgspec.structs.replace(TASK, text=f"sleep 1000 & echo $! > {pidfile}; echo done")
    res = await asyncio.wait_for(run_task(cfg, task), 15)
    assert (res.ok, res.stdout) == (True, "done\n")
    await assert_gone(int(pidfile.read_text()))


async def test_outer_cancellation_kills_the_group(tmp_path: Path, ready: Any) -> None:
    fifo, wait = ready
    cfg = ExecutorConfig(kind="command", exec=["sh", script(tmp_path, GROUP, "g.sh"), fifo])
    run = asyncio.create_task(run_task(cfg, TASK))
    leader, grandchild = map(int, (await wait()).split())
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await assert_gone(leader, grandchild)


# --------------------------------------------------------------------------- spawn errors


async def test_missing_executable_is_a_specific_error(tmp_path: Path) -> None:
    res = await run_task(ExecutorConfig(kind="command", exec=["cfn-no-such-cmd-xyz"]), TASK)
    assert (res.ok, res.exit_code) == (False, None)
    assert res.error == "executable 'cfn-no-such-cmd-xyz' not found on PATH"
    res = await run_task(ExecutorConfig(kind="command", exec=[str(tmp_path / "nope")]), TASK)
    assert res.error == f"executable '{tmp_path / 'nope'}' not found"
    plain = tmp_path / "plain.txt"
    plain.write_text("not a program")
    res = await run_task(ExecutorConfig(kind="command", exec=[str(plain)]), TASK)
    assert res.error is not None and "permission denied" in res.error
    cfg = ExecutorConfig(kind="shell", workdir=str(tmp_path / "missing"))
    res = await run_task(cfg, TASK)
    assert res.error is not None and res.error.startswith("workdir ")


# --------------------------------------------------------------------------- claude / shell


async def test_claude_preset_gets_dash_p_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "claude"
    fake.write_text(
        f"#!{PY}\nimport json, sys\n"
        "print('thinking')\n"
        "print(json.dumps({'output': json.dumps(sys.argv[1:]), 'confidence': 0.9}))\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    cfg = builtin_executor("coder")
    assert cfg is not None and cfg.kind == "claude"
    prompt = 'Fix the "bug" in {module}; run $(tests)'
    res = await run_task(cfg, msgspec.structs.replace(TASK, text=prompt))
    assert res.ok and res.confidence == 0.9
    # The prompt is one literal argument right after -p; the preset's own options
    # (tests/test_agent_presets.py) follow, then the configured args.
    assert msgspec.json.decode(res.output)[:2] == ["-p", prompt]
    cfg = ExecutorConfig(kind="claude", claude_args=["--model", "opus", "--id={task_id}"])
    res = await run_task(cfg, TASK)
    argv = msgspec.json.decode(res.output)
    assert argv[:2] == ["-p", "do it"] and argv[-3:] == ["--model", "opus", "--id=t-1"]


async def test_claude_missing_binary_explains_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    res = await run_task(ExecutorConfig(kind="claude"), TASK)
    assert not res.ok and res.error is not None
    assert res.error.startswith("executable 'claude' not found on PATH")
    assert (
        "npm install -g @anthropic-ai/claude-code" in res.error and "`claude_binary`" in res.error
    )


async def test_shell_kind(tmp_path: Path) -> None:
    cfg = ExecutorConfig(kind="shell")
    res = await run_task(cfg, msgspec.structs.replace(TASK, text="echo hi && exit 3"))
    assert (res.ok, res.exit_code, res.stdout, res.error) == (False, 3, "hi\n", "exit status 3")
    cfg = ExecutorConfig(kind="shell", workdir=str(tmp_path))
    res = await run_task(cfg, msgspec.structs.replace(TASK, text='pwd; echo "$CFN_TASK_ID"'))
    assert res.ok and res.stdout == f"{tmp_path}\nt-1\n"
    res = await run_task(cfg, msgspec.structs.replace(TASK, text="kill -9 $$"))
    assert (res.ok, res.exit_code, res.error) == (False, -9, "killed by signal 9 (SIGKILL)")


# --------------------------------------------------------------------------- python

ENTRY_MODULE = """
import asyncio, threading
release = threading.Event()

def sync(task):
    return f"sync {task.text} in {threading.current_thread().name}"

async def coro(task):
    await asyncio.sleep(0)
    return {"output": "async " + task.task_id, "confidence": 0.6, "vote": "reject",
            "feedback": ["more tests"]}

def as_dict(task):
    return {"ok": False, "output": "partial", "feedback": "x"}

def bad_conf(task):
    return {"confidence": 2}

def boom(task):
    raise ValueError(f"cannot handle {task.task_id}")

async def slow(task):
    if "started" in task.context:
        task.context["started"].set()
    await asyncio.sleep(1000)

def blocked(task):
    release.wait(30)
    return "late"

def exits(task):
    raise SystemExit(3)

def wrong(task):
    return 42

def full(task):
    from cfn_daemon.agent.executors import ExecResult
    return ExecResult(ok=True, output="custom", confidence=0.5, stdout="raw")
"""


@pytest.fixture
def entry_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    name = f"cfn_test_entry_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(ENTRY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    module = sys.modules.pop(name, None)
    if module is not None:
        module.release.set()  # free a thread left blocked by a timeout test


def py_cfg(module: str, func: str, **kw: Any) -> ExecutorConfig:
    return ExecutorConfig(kind="python", entry=f"{module}:{func}", **kw)


async def test_python_sync_and_async(entry_module: str) -> None:
    res = await run_task(py_cfg(entry_module, "sync"), TASK)
    assert res.ok and res.output.startswith("sync do it in cfn-exec-sync")
    res = await run_task(py_cfg(entry_module, "coro"), TASK)
    assert res.ok and (res.output, res.confidence, res.vote) == ("async t-1", 0.6, "reject")
    assert res.feedback == ["more tests"]


async def test_python_dict_and_bad_returns(entry_module: str) -> None:
    res = await run_task(py_cfg(entry_module, "as_dict"), TASK)
    assert (res.ok, res.output, res.feedback) == (False, "partial", "x")
    res = await run_task(py_cfg(entry_module, "bad_conf"), TASK)
    assert res.error == "`confidence` in the returned dict: expected a number in [0, 1], got 2"
    res = await run_task(py_cfg(entry_module, "full"), TASK)
    assert (res.ok, res.output, res.confidence, res.stdout) == (True, "custom", 0.5, "raw")
    res = await run_task(py_cfg(entry_module, "sync", max_output_bytes=4), TASK)
    assert (res.output, res.truncated) == ("sync", True)
    res = await run_task(py_cfg(entry_module, "wrong"), TASK)
    assert res.error == f"{entry_module}:wrong returned int; expected str or dict"


async def test_python_exceptions(entry_module: str) -> None:
    res = await run_task(py_cfg(entry_module, "boom"), TASK)
    assert (res.ok, res.error) == (False, "ValueError: cannot handle t-1")
    assert "Traceback" in res.stderr and "in boom" in res.stderr
    res = await run_task(py_cfg(entry_module, "exits"), TASK)
    assert (res.ok, res.error) == (False, "RuntimeError: SystemExit(3)")
    res = await run_task(py_cfg(entry_module, "missing"), TASK)
    assert res.error is not None and res.error.startswith("AttributeError: ")
    res = await run_task(py_cfg("cfn_no_such_module_xyz", "f"), TASK)
    assert res.error == "ModuleNotFoundError: No module named 'cfn_no_such_module_xyz'"


async def test_python_timeout_and_cancel(entry_module: str) -> None:
    res = await run_task(py_cfg(entry_module, "slow", timeout_s=0.2), TASK)
    assert (res.ok, res.error) == (False, "timed out after 0.2 s")
    res = await run_task(py_cfg(entry_module, "blocked", timeout_s=0.2), TASK)
    assert (res.ok, res.error) == (False, "timed out after 0.2 s")
    cancel, started = asyncio.Event(), asyncio.Event()
    task = msgspec.structs.replace(TASK, context={"started": started})
    run = asyncio.create_task(run_task(py_cfg(entry_module, "slow"), task, cancel=cancel))
    await asyncio.wait_for(started.wait(), 10)
    cancel.set()
    res = await asyncio.wait_for(run, 10)
    assert (res.ok, res.error) == (False, "cancelled")


# --------------------------------------------------------------------------- pure helpers


@given(st.text(), st.text())
def test_substitute_is_single_pass_and_literal(text: str, other: str) -> None:
    task = msgspec.structs.replace(TASK, text=text)
    assert substitute("{task}", task) == text
    assert substitute("<{task}|{attempt}>", task) == f"<{text}|1>"
    if "{" not in other:
        assert substitute(other, task) == other


def outcome(stdout: bytes, total: int | None = None, returncode: int = 0) -> proc.ProcOutcome:
    tail = stdout[-proc.TAIL_BYTES :]
    total = len(stdout) if total is None else total
    return proc.ProcOutcome(returncode, stdout, b"", tail, total, False, None)


def test_last_stdout_line_and_exit_text() -> None:
    assert outcome(b'a\n{"ok": true}\n\n  \n').last_stdout_line() == '{"ok": true}'
    assert outcome(b"").last_stdout_line() is None
    assert outcome(b"only line").last_stdout_line() == "only line"
    # a last line longer than the kept tail is incomplete: never parsed
    assert outcome(b"x" * 10, total=10_000_000).last_stdout_line() is None
    assert outcome(b"", returncode=3).exit_text() == "exit status 3"
    assert outcome(b"", returncode=-15).exit_text() == "killed by signal 15 (SIGTERM)"


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "command"}, "`exec`: expected a non-empty argv list"),
        ({"kind": "command", "exec": [""]}, "`exec`: expected a non-empty argv list"),
        ({"kind": "shell", "exec": ["x"]}, "`exec`: expected no argv for kind 'shell'"),
        ({"kind": "python"}, "`entry`: expected 'pkg.module:function'"),
        ({"kind": "python", "entry": "pkg.mod"}, "`entry`: expected 'pkg.module:function'"),
        ({"kind": "claude", "entry": "a:b"}, "`entry`: expected no entry point"),
        ({"kind": "shell", "timeout_s": 0}, "`timeout_s`: expected a number of seconds > 0"),
        ({"kind": "shell", "max_output_bytes": 0}, "`max_output_bytes`: expected an integer"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}".replace("[", r"\[")):
        ExecutorConfig(**kwargs)
    with pytest.raises(ConfigError) as info:
        parse_executor_config(kwargs, source="types.x.executor")
    assert info.value.details["key"] == message.split("`")[1]


def test_parse_executor_config_names_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="key shel = 1 is invalid: unknown key; expected one of"):
        parse_executor_config({"kind": "shell", "shel": 1})
    with pytest.raises(ConfigError, match=r"key kind = 'bash' .*expected one of command, claude"):
        parse_executor_config({"kind": "bash"})
    cfg = parse_executor_config({"kind": "python", "entry": "pkg.mod:Cls.run", "timeout_s": 5})
    assert cfg.entry == "pkg.mod:Cls.run" and cfg.timeout_s == 5


def test_builtin_executors() -> None:
    assert builtin_executor("shell") == ExecutorConfig(kind="shell")
    for agent_type in ("coder", "reviewer", "tester", "researcher", "architect"):
        assert builtin_executor(agent_type) == ExecutorConfig(kind="claude")
    assert builtin_executor("security-specialist") == ExecutorConfig(kind="claude")
    assert builtin_executor("product-owner") == ExecutorConfig(kind="claude")
    assert builtin_executor("my-custom-type") is None
