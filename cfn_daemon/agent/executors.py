"""Executors: run ONE task for an agent and report an ``ExecResult``.

Kinds (``ExecutorConfig.kind``):

``command``
    ``exec`` is an argv template run WITHOUT a shell. In each argument the
    placeholders ``{task}``, ``{task_id}``, ``{swarm}``, ``{agent_id}``,
    ``{agent_type}`` and ``{attempt}`` are replaced (one pass; other braces and
    the substituted text are left alone). The task JSON (``TaskInput``) arrives on
    stdin; the environment is ours plus ``env`` plus ``CFN_TASK_ID``, ``CFN_SWARM``,
    ``CFN_AGENT_ID``, ``CFN_AGENT_TYPE`` and ``CFN_ATTEMPT``, minus Redis secrets
    (``CFN_REDIS_PASSWORD``, and ``CFN_REDIS_URL`` when it carries credentials).
``shell``
    ``sh -c <task text>`` in ``workdir`` (default: the current directory);
    otherwise like ``command``.
``claude``
    The Claude Code preset: ``[claude_binary, "-p", <task text>, *claude_args]``
    (placeholders are substituted in ``claude_args``). Its stdout is the output.
    Install Claude Code (``npm install -g @anthropic-ai/claude-code``) or point
    ``claude_binary`` at the executable.
``python``
    ``entry = "pkg.module:function"`` is imported and called with the
    ``TaskInput`` in-process (``workdir``/``env`` do not apply). A coroutine
    function is awaited; a plain function runs in a daemon worker thread. It may
    return a str (the output), a dict with ``output``/``confidence``/``vote``/
    ``feedback``/``ok``, an ``ExecResult``, or None (empty output). An exception
    gives ``ok=False`` with ``error="ValueError: ..."`` and the traceback in stderr.

Result rule for processes: if the LAST non-empty stdout line is a JSON object with
any of ``output``, ``confidence`` (a number in [0, 1]), ``vote`` (``approve`` or
``reject``), ``feedback`` or ``ok`` (bool; overrides the exit status), those fields
are used; otherwise exit status 0 means ok. stdout and stderr are each capped at
``max_output_bytes`` (``truncated=True``; the last line is still parsed). On
``timeout_s`` or when the ``cancel`` event is set the whole process group gets
SIGTERM, then SIGKILL 5 s later; whatever is left in the group after the main
process exits is terminated too (see ``cfn_daemon.agent.proc``). Failures never raise:
they come back as ``ok=False`` with a specific ``error``.

Built-in agent types (``builtin_executor``): ``shell`` runs kind ``shell``;
``coder``, ``reviewer``, ``tester``, ``researcher``, ``architect``,
``security-specialist`` and ``product-owner`` run the ``claude`` preset.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import inspect
import os
import re
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

from cfn_client.wire.errors import ConfigError
from cfn_daemon.agent.proc import KILL_GRACE_S, ProcOutcome, run_process

__all__ = ["BUILTIN_TYPES", "ExecResult", "ExecutorConfig", "TaskInput"]
__all__ += ["builtin_executor", "parse_executor_config", "run_task"]

Kind = Literal["command", "claude", "python", "shell"]
Vote = Literal["approve", "reject"]
KINDS = ("command", "claude", "python", "shell")
CLAUDE_TYPES = (
    *("coder", "reviewer", "tester", "researcher", "architect"),
    *("security-specialist", "product-owner"),
)
BUILTIN_TYPES = ("shell", *CLAUDE_TYPES)
SECRET_ENV = ("CFN_REDIS_PASSWORD",)
RESULT_KEYS = frozenset({"output", "confidence", "vote", "feedback", "ok"})
CLAUDE_HINT = (
    "install Claude Code (npm install -g @anthropic-ai/claude-code) "
    "or set `claude_binary` to the full path of the executable"
)
_ENTRY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_VALIDATION_PATTERNS = (
    re.compile(r"^`(?P<key>\w+)`: (?P<rest>.*)$"),  # our __post_init__ messages
    re.compile(r"^(?P<rest>.*) - at `\$\.(?P<key>\w+)"),
    re.compile(r"^Object (contains unknown|missing required) field `(?P<key>\w+)`"),
)
_PLACEHOLDER = re.compile(r"\{(task|task_id|swarm|agent_id|agent_type|attempt)\}")


class ExecutorConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How an agent type runs its tasks (see the module docstring for each kind)."""

    kind: Kind
    exec: list[str] = []
    entry: str | None = None
    workdir: str | None = None
    env: dict[str, str] = {}
    timeout_s: float | None = None
    max_output_bytes: int = 1 << 20
    claude_binary: str = "claude"
    claude_args: list[str] = []

    def __post_init__(self) -> None:
        # "`field`: ..." lets config errors name the exact key.
        if self.kind not in KINDS:
            raise ValueError(f"`kind`: expected one of {', '.join(KINDS)}")
        if self.kind == "command" and not (self.exec and self.exec[0]):
            raise ValueError("`exec`: expected a non-empty argv list for kind 'command'")
        if self.kind != "command" and self.exec:
            raise ValueError(f"`exec`: expected no argv for kind {self.kind!r}")
        if self.kind == "python" and not (self.entry and _ENTRY.match(self.entry)):
            raise ValueError("`entry`: expected 'pkg.module:function' for kind 'python'")
        if self.kind != "python" and self.entry is not None:
            raise ValueError(f"`entry`: expected no entry point for kind {self.kind!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError("`timeout_s`: expected a number of seconds > 0")
        if self.max_output_bytes < 1:
            raise ValueError("`max_output_bytes`: expected an integer >= 1")
        if not self.claude_binary:
            raise ValueError("`claude_binary`: expected a command name or path")


class TaskInput(msgspec.Struct, kw_only=True):
    """What the agent hands its executor (also the JSON a child reads on stdin)."""

    task_id: str
    swarm: str
    agent_id: str
    agent_type: str
    text: str
    attempt: int = 1
    context: dict[str, Any] = {}


class ExecResult(msgspec.Struct, kw_only=True):
    """The outcome of one task; ``error`` says why when ``ok`` is False."""

    ok: bool
    exit_code: int | None = None
    output: str = ""
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    confidence: float | None = None
    vote: Vote | None = None
    feedback: Any | None = None
    error: str | None = None
    duration_ms: float = 0.0


def builtin_executor(agent_type: str) -> ExecutorConfig | None:
    """The default executor of a built-in agent type, or None for unknown types."""
    if agent_type == "shell":
        return ExecutorConfig(kind="shell")
    if agent_type in CLAUDE_TYPES:
        return ExecutorConfig(kind="claude")
    return None


def parse_executor_config(data: Mapping[str, Any], *, source: str = "executor") -> ExecutorConfig:
    """Validate a mapping (e.g. a TOML table); raises ``ConfigError`` naming the key."""
    try:
        return msgspec.convert(data, ExecutorConfig)
    except msgspec.ValidationError as exc:
        text = str(exc)
        key: str | None = None
        expected = text
        for pattern in _VALIDATION_PATTERNS:
            m = pattern.search(text)
            if m:
                key, expected = m.group("key"), m.groupdict().get("rest") or expected
                break
        if key == "kind":
            expected = f"{expected}; expected one of {', '.join(KINDS)}"
        elif text.startswith("Object contains unknown field"):
            expected = f"unknown key; expected one of {', '.join(ExecutorConfig.__struct_fields__)}"
        value = data.get(key) if key and isinstance(data, Mapping) else None
        raise ConfigError(
            f"{source}: key {key or '<root>'} = {value!r} is invalid: {expected}",
            details={"source": source, "key": key, "value": value, "expected": expected},
        ) from None


async def run_task(
    cfg: ExecutorConfig, task: TaskInput, *, cancel: asyncio.Event | None = None
) -> ExecResult:
    """Run one task with ``cfg``; never raises for task failures (see ``ExecResult.error``)."""
    started = time.monotonic()
    if cancel is not None and cancel.is_set():
        result = ExecResult(ok=False, error="cancelled")
    elif cfg.kind == "python":
        result = await _run_python(cfg, task, cancel)
    else:
        result = await _run_argv(cfg, task, cancel)
    result.duration_ms = (time.monotonic() - started) * 1000.0
    return result


# --------------------------------------------------------------------------- processes


def substitute(template: str, task: TaskInput) -> str:
    """Replace the known ``{placeholders}`` in one argument; everything else stays."""
    values = {"task": task.text, "task_id": task.task_id, "swarm": task.swarm}
    values |= {"agent_id": task.agent_id, "agent_type": task.agent_type}
    values["attempt"] = str(task.attempt)
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def build_argv(cfg: ExecutorConfig, task: TaskInput) -> list[str]:
    if cfg.kind == "shell":
        return ["sh", "-c", task.text]
    if cfg.kind == "claude":
        return [cfg.claude_binary, "-p", task.text, *(substitute(a, task) for a in cfg.claude_args)]
    return [substitute(a, task) for a in cfg.exec]


def build_env(cfg: ExecutorConfig, task: TaskInput) -> dict[str, str]:
    env = {**os.environ, **cfg.env}
    env.update(
        CFN_TASK_ID=task.task_id,
        CFN_SWARM=task.swarm,
        CFN_AGENT_ID=task.agent_id,
        CFN_AGENT_TYPE=task.agent_type,
        CFN_ATTEMPT=str(task.attempt),
    )
    for name in SECRET_ENV:
        env.pop(name, None)
    if "@" in env.get("CFN_REDIS_URL", ""):  # redis://user:password@host
        del env["CFN_REDIS_URL"]
    return env


def _spawn_error(exc: OSError, cfg: ExecutorConfig, argv0: str, cwd: str | None) -> str:
    if cwd is not None and not os.path.isdir(cwd):
        return f"workdir {cwd!r} does not exist or is not a directory"
    hint = f"; {CLAUDE_HINT}" if cfg.kind == "claude" else ""
    if isinstance(exc, FileNotFoundError):
        where = "" if os.sep in argv0 else " on PATH"
        return f"executable {argv0!r} not found{where}{hint}"
    if isinstance(exc, PermissionError):
        return f"executable {argv0!r} cannot be run (permission denied){hint}"
    return f"cannot start {argv0!r}: {exc}"


async def _run_argv(
    cfg: ExecutorConfig, task: TaskInput, cancel: asyncio.Event | None
) -> ExecResult:
    argv = build_argv(cfg, task)
    try:
        stdin_data = msgspec.json.encode(task) + b"\n"
    except (TypeError, msgspec.EncodeError) as exc:
        return ExecResult(ok=False, error=f"the task cannot be encoded as JSON: {exc}")
    try:
        proc = await run_process(
            argv,
            stdin_data=stdin_data,
            env=build_env(cfg, task),
            cwd=cfg.workdir,
            timeout_s=cfg.timeout_s,
            cancel=cancel,
            max_bytes=cfg.max_output_bytes,
        )
    except OSError as exc:
        return ExecResult(ok=False, error=_spawn_error(exc, cfg, argv[0], cfg.workdir))
    return _process_result(cfg, proc)


def _process_result(cfg: ExecutorConfig, proc: ProcOutcome) -> ExecResult:
    stdout = proc.stdout.decode("utf-8", "replace")
    result = ExecResult(
        ok=proc.returncode == 0,
        exit_code=proc.returncode,
        output=stdout,
        stdout=stdout,
        stderr=proc.stderr.decode("utf-8", "replace"),
        truncated=proc.truncated,
    )
    if proc.stopped is not None:
        result.ok, result.error = False, _stopped_error(cfg, proc.stopped)
        return result
    line = proc.last_stdout_line()
    structured = _structured(line) if line is not None else None
    if isinstance(structured, str):
        result.ok, result.error = False, structured
        return result
    if structured is not None:
        result.output = structured.get("output", result.output)
        result.confidence = structured.get("confidence")
        result.vote = structured.get("vote")
        result.feedback = structured.get("feedback")
        result.ok = structured.get("ok", result.ok)
        if not result.ok and "ok" in structured:
            result.error = "the task reported ok=false"
    if result.ok or result.error:
        return result
    result.error = proc.exit_text()
    return result


def _stopped_error(cfg: ExecutorConfig, why: str) -> str:
    return "cancelled" if why == "cancelled" else f"timed out after {float(cfg.timeout_s or 0)} s"


def _structured(line: str) -> dict[str, Any] | str | None:
    """Result fields from a JSON last line; a str is an error; None: not structured."""
    if not line.startswith("{"):
        return None
    try:
        obj = msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        return f"last stdout line looked like JSON but did not parse: {exc}"
    if not isinstance(obj, dict) or not RESULT_KEYS & obj.keys():
        return None
    return _check_fields(obj, "in the last stdout line")


def _check_fields(obj: Mapping[str, Any], where: str) -> dict[str, Any] | str:
    """Validate result fields; returns the clean fields or an error message."""
    out: dict[str, Any] = {}
    conf = obj.get("confidence")
    if conf is not None:
        if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0 <= conf <= 1:
            return f"`confidence` {where}: expected a number in [0, 1], got {conf!r}"
        out["confidence"] = float(conf)
    vote = obj.get("vote")
    if vote is not None:
        if vote not in ("approve", "reject"):
            return f"`vote` {where}: expected 'approve' or 'reject', got {vote!r}"
        out["vote"] = vote
    if "ok" in obj:
        if not isinstance(obj["ok"], bool):
            return f"`ok` {where}: expected true or false, got {obj['ok']!r}"
        out["ok"] = obj["ok"]
    if obj.get("output") is not None:
        output = obj["output"]
        out["output"] = output if isinstance(output, str) else _to_json(output)
    if "feedback" in obj:
        out["feedback"] = obj["feedback"]
    return out


def _to_json(value: Any) -> str:
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


# --------------------------------------------------------------------------- python


def _resolve(entry: str) -> Callable[..., Any]:
    module_name, _, attr_path = entry.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    if not callable(obj):
        raise TypeError(f"{entry} is not callable")
    return obj  # type: ignore[no-any-return]


def _in_thread(func: Callable[..., Any], arg: Any) -> asyncio.Future[Any]:
    """Run ``func(arg)`` in a daemon thread: a stuck function never blocks shutdown."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    ctx = contextvars.copy_context()

    def settle(value: Any, exc: BaseException | None) -> None:
        if not fut.done():  # else: timed out or cancelled meanwhile
            fut.set_exception(exc) if exc is not None else fut.set_result(value)

    def worker() -> None:
        value: Any = None
        exc: BaseException | None = None
        try:
            value = ctx.run(func, arg)
        except Exception as err:  # delivered to the awaiting coroutine
            exc = err
        except BaseException as err:  # SystemExit must not stop the event loop
            exc = _exit_error(err)
        with contextlib.suppress(RuntimeError):  # the loop closed while we were stuck
            loop.call_soon_threadsafe(settle, value, exc)

    name = f"cfn-exec-{getattr(func, '__name__', 'entry')}"
    threading.Thread(target=worker, name=name, daemon=True).start()
    return fut


def _exit_error(exc: BaseException) -> Exception:
    return RuntimeError(f"{type(exc).__name__}({exc})")


async def _call_python(cfg: ExecutorConfig, task: TaskInput) -> Any:
    assert cfg.entry is not None
    func = _resolve(cfg.entry)
    try:
        if inspect.iscoroutinefunction(func):
            return await func(task)
        value = await _in_thread(func, task)
        if inspect.isawaitable(value):  # e.g. a functools.partial of a coroutine function
            value = await value
        return value
    except (SystemExit, GeneratorExit) as exc:  # would otherwise escape the event loop
        raise _exit_error(exc) from exc


async def _run_python(
    cfg: ExecutorConfig, task: TaskInput, cancel: asyncio.Event | None
) -> ExecResult:
    call = asyncio.ensure_future(_call_python(cfg, task))
    waiters: set[asyncio.Future[Any]] = {call}
    stop = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
    if stop is not None:
        waiters.add(stop)
    try:
        await asyncio.wait(waiters, timeout=cfg.timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if stop is not None:
            stop.cancel()
        if not call.done():
            call.cancel()  # a coroutine is cancelled; a thread is abandoned
            call.add_done_callback(_discard)
    if not call.done():
        await asyncio.wait({call}, timeout=KILL_GRACE_S)  # let it run its cleanup
    if not call.done() or call.cancelled():
        why = "cancelled" if cancel is not None and cancel.is_set() else "timeout"
        return ExecResult(ok=False, error=_stopped_error(cfg, why))
    exc = call.exception()
    if exc is not None:
        trace = "".join(traceback.format_exception(exc))
        return ExecResult(ok=False, error=f"{type(exc).__name__}: {exc}", stderr=trace)
    return _python_result(cfg, call.result())


def _discard(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: no "exception was never retrieved" log


def _python_result(cfg: ExecutorConfig, value: Any) -> ExecResult:
    if isinstance(value, ExecResult):
        return value
    if value is None or isinstance(value, str):
        result = ExecResult(ok=True, output=value or "")
    elif isinstance(value, Mapping):
        fields = _check_fields(value, "in the returned dict")
        if isinstance(fields, str):
            return ExecResult(ok=False, error=fields)
        result = ExecResult(ok=fields.pop("ok", True), **fields)
        if not result.ok:
            result.error = "the task reported ok=false"
    else:
        kind = type(value).__name__
        return ExecResult(ok=False, error=f"{cfg.entry} returned {kind}; expected str or dict")
    data = result.output.encode()
    if len(data) > cfg.max_output_bytes:
        result.output = data[: cfg.max_output_bytes].decode("utf-8", "ignore")
        result.truncated = True
    return result
