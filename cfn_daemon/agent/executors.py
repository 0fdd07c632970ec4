"""Executors: run ONE task for an agent and report an ``ExecResult``.

Kinds (``ExecutorConfig.kind``):

``command``
    ``exec`` is an argv template run WITHOUT a shell. In each argument the
    placeholders ``{task}``, ``{task_id}``, ``{swarm}``, ``{agent_id}``,
    ``{agent_type}`` and ``{attempt}`` are replaced (one pass; other braces and
    the substituted text are left alone). The task JSON (``TaskInput``) arrives on
    stdin; the environment is ours plus ``env`` plus ``CFN_TASK_ID``, ``CFN_SWARM``,
    ``CFN_AGENT_ID``, ``CFN_AGENT_TYPE``, ``CFN_ATTEMPT`` (and ``CFN_WORKSPACE`` /
    ``CFN_BASE_REF`` when the task context has them), minus Redis secrets
    (``CFN_REDIS_PASSWORD``, and ``CFN_REDIS_URL`` when it carries credentials).
``shell``
    ``sh -c <task text>``; otherwise like ``command``.
``check``
    A plain command (``exec``, or the task text with ``sh -c``): ok is exit status 0,
    stdout is not parsed. As a validator it votes by its exit status (``checks``).
``claude`` / ``codex``
    The Claude Code (``claude -p ... --output-format json``) and Codex (``codex exec
    --json``) presets, see ``cfn_daemon.agent.presets``: role-dependent permissions,
    a role contract, ``model``/``max_turns``/``args``, and the CLI's session, cost and
    token counts in the result. A claude that prints text (an old CLI, or
    ``--output-format text`` in ``args``) is read by the last-line rule below.
    No stdin. Install Claude Code (``npm install -g @anthropic-ai/claude-code``) or
    Codex (``npm install -g @openai/codex``), or point ``binary`` at the executable.
``python``
    ``entry = "pkg.module:function"`` is imported and called with the
    ``TaskInput`` in-process (``workdir``/``env`` do not apply). A coroutine
    function is awaited; a plain function runs in a daemon worker thread. It may
    return a str (the output), a dict with ``output``/``confidence``/``vote``/
    ``feedback``/``ok``, an ``ExecResult``, or None (empty output). An exception
    gives ``ok=False`` with ``error="ValueError: ..."`` and the traceback in stderr.

Processes run in the task context's ``workspace`` when it has one, else in
``workdir`` (default: the current directory).

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
``checker`` runs kind ``check``; ``coder``, ``reviewer``, ``tester``, ``researcher``,
``architect``, ``security-specialist`` and ``product-owner`` run the ``claude`` preset.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import inspect
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from cfn_daemon.agent import checks, presets
from cfn_daemon.agent.exectypes import (
    KINDS,
    ExecResult,
    ExecutorConfig,
    TaskContext,
    TaskInput,
    parse_executor_config,
    substitute,
)
from cfn_daemon.agent.proc import KILL_GRACE_S, ProcOutcome, run_process

__all__ = ["BUILTIN_TYPES", "KINDS", "ExecResult", "ExecutorConfig", "TaskContext", "TaskInput"]
__all__ += ["builtin_executor", "parse_executor_config", "run_task", "substitute"]

CLAUDE_TYPES = (
    *("coder", "reviewer", "tester", "researcher", "architect"),
    *("security-specialist", "product-owner"),
)
BUILTIN_TYPES = ("shell", "checker", *CLAUDE_TYPES)
SECRET_ENV = ("CFN_REDIS_PASSWORD", "CFN_AGENT_TOKEN", "CFN_SOCKET", "REDISCLI_AUTH")
# Inherited variables a task never sees: cfn's own settings and the service manager's.
SCRUBBED_PREFIXES = ("CFN_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_FDS", "LISTEN_PID")
RESULT_KEYS = frozenset({"output", "confidence", "vote", "feedback", "ok"})
BINARY_HINT = "or set `binary` (formerly `claude_binary`) to the full path of the executable"


def builtin_executor(agent_type: str) -> ExecutorConfig | None:
    """The default executor of a built-in agent type, or None for unknown types."""
    if agent_type == "shell":
        return ExecutorConfig(kind="shell")
    if agent_type == "checker":
        return ExecutorConfig(kind="check")
    if agent_type in CLAUDE_TYPES:
        return ExecutorConfig(kind="claude")
    return None


async def run_task(
    cfg: ExecutorConfig, task: TaskInput, *, cancel: asyncio.Event | None = None
) -> ExecResult:
    """Run one task with ``cfg``; never raises for task failures (see ``ExecResult.error``)."""
    started = time.monotonic()
    ctx = TaskContext.of(task.context)
    if cancel is not None and cancel.is_set():
        result = ExecResult(ok=False, error="cancelled")
    elif cfg.kind == "python":
        result = await _run_python(cfg, task, cancel)
    elif cfg.kind in ("claude", "codex"):
        result = await _run_preset(cfg, task, ctx, cancel)
    else:
        result = await _run_argv(cfg, task, ctx, cancel)
    if ctx.kind == "validate":
        # Before the agent signs the vote: a check's exit status is its vote.
        result = checks.vote_by_exit(result, cfg, task)
    result.duration_ms = (time.monotonic() - started) * 1000.0
    return result


# --------------------------------------------------------------------------- processes


def build_argv(cfg: ExecutorConfig, task: TaskInput, ctx: TaskContext | None = None) -> list[str]:
    ctx = ctx or TaskContext.of(task.context)
    if cfg.kind == "shell":
        return ["sh", "-c", task.text]
    if cfg.kind == "check":
        return checks.check_argv(cfg, task)
    if cfg.kind == "claude":
        return presets.claude_argv(cfg, task, ctx, resume=cfg.resume)
    if cfg.kind == "codex":
        return presets.codex_argv(cfg, task, ctx, resume=cfg.resume)
    return [substitute(a, task) for a in cfg.exec]


def build_env(cfg: ExecutorConfig, task: TaskInput) -> dict[str, str]:
    """The task's environment: ours without anything of cfn's own (no ``CFN_*`` such as
    the Redis password or URL, the agent token or cfnd's socket; no ``REDISCLI_AUTH``,
    no notify socket), plus the type's ``env`` and the task's ``CFN_*`` variables."""
    env = {k: v for k, v in os.environ.items() if not _inherited_secret(k)}
    env.update(cfg.env)
    env.update(
        CFN_TASK_ID=task.task_id,
        CFN_SWARM=task.swarm,
        CFN_AGENT_ID=task.agent_id,
        CFN_AGENT_TYPE=task.agent_type,
        CFN_ATTEMPT=str(task.attempt),
    )
    ctx = TaskContext.of(task.context)
    if ctx.workspace:
        env["CFN_WORKSPACE"] = ctx.workspace
    if ctx.base_ref:
        env["CFN_BASE_REF"] = ctx.base_ref
    for name in SECRET_ENV:
        env.pop(name, None)
    env.update(resolve_secrets(cfg.secrets))
    return env


class SecretMissing(Exception):
    """A type's secret cannot be resolved on this host."""


def resolve_secrets(refs: dict[str, str]) -> dict[str, str]:
    """``{NAME: value}`` from this host's environment (``env:VAR``) or files
    (``file:PATH``); ``SecretMissing`` names what is missing, never a value."""
    out = {}
    for name, ref in refs.items():
        kind, _, where = ref.partition(":")
        value: str | None = None
        if kind == "env":
            value = os.environ.get(where)
        elif kind == "file":
            try:
                value = Path(where).read_text().strip()
            except OSError as exc:
                raise SecretMissing(f"secret {name}: cannot read {where}: {exc.strerror}") from None
        if not value:
            raise SecretMissing(f"secret {name}: {ref} is not set on this host")
        out[name] = value
    return out


def _inherited_secret(name: str) -> bool:
    return name.startswith(SCRUBBED_PREFIXES) or name in SECRET_ENV


def _spawn_error(exc: OSError, cfg: ExecutorConfig, argv0: str, ctx: TaskContext) -> str:
    cwd = ctx.workspace or cfg.workdir
    if cwd is not None and not os.path.isdir(cwd):
        what = "workspace" if ctx.workspace else "workdir"
        return f"{what} {cwd!r} does not exist or is not a directory"
    hint = (
        f"; {checks.INSTALL_HINTS[cfg.kind]} {BINARY_HINT}"
        if cfg.kind in checks.INSTALL_HINTS
        else ""
    )
    if isinstance(exc, FileNotFoundError):
        where = "" if os.sep in argv0 else " on PATH"
        return f"executable {argv0!r} not found{where}{hint}"
    if isinstance(exc, PermissionError):
        return f"executable {argv0!r} cannot be run (permission denied){hint}"
    return f"cannot start {argv0!r}: {exc}"


async def _spawn(
    cfg: ExecutorConfig,
    task: TaskInput,
    ctx: TaskContext,
    argv: list[str],
    cancel: asyncio.Event | None,
    stdin_data: bytes,
) -> ProcOutcome | ExecResult:
    """Run argv for this task; an ``ExecResult`` when it could not be started."""
    try:
        return await run_process(
            argv,
            stdin_data=stdin_data,
            env=build_env(cfg, task),
            cwd=ctx.workspace or cfg.workdir,
            timeout_s=cfg.timeout_s,
            cancel=cancel,
            max_bytes=cfg.max_output_bytes,
        )
    except SecretMissing as exc:
        return ExecResult(ok=False, error=str(exc))
    except OSError as exc:
        return ExecResult(ok=False, error=_spawn_error(exc, cfg, argv[0], ctx))
    except ValueError as exc:  # "embedded null byte" in argv, env or cwd
        return ExecResult(ok=False, error=f"cannot start {argv[0]!r}: {exc} (NUL in its input)")


async def _run_argv(
    cfg: ExecutorConfig, task: TaskInput, ctx: TaskContext, cancel: asyncio.Event | None
) -> ExecResult:
    try:
        stdin_data = msgspec.json.encode(task) + b"\n"
    except (TypeError, msgspec.EncodeError) as exc:
        return ExecResult(ok=False, error=f"the task cannot be encoded as JSON: {exc}")
    proc = await _spawn(cfg, task, ctx, build_argv(cfg, task, ctx), cancel, stdin_data)
    if isinstance(proc, ExecResult):
        return proc
    if cfg.kind == "check":  # a plain command: its exit status, not its stdout, decides
        result = _plain_result(proc)
        if proc.stopped is not None:
            result.error = _stopped_error(cfg, proc.stopped)
        elif not result.ok:
            result.error = proc.exit_text()
        return result
    return _process_result(cfg, proc)


async def _run_preset(
    cfg: ExecutorConfig, task: TaskInput, ctx: TaskContext, cancel: asyncio.Event | None
) -> ExecResult:
    resume = cfg.resume and ctx.resume_session is not None
    argv = build_argv(cfg, task, ctx)
    # No stdin: `claude -p` would add piped input to the prompt.
    proc = await _spawn(cfg, task, ctx, argv, cancel, b"")
    if isinstance(proc, ExecResult):
        return proc
    parse = presets.parse_claude if cfg.kind == "claude" else presets.parse_codex
    report = parse(proc)
    note = ""
    if resume and report is None and proc.stopped is None and proc.returncode != 0:
        # The session is gone (another host, expired, cleaned up): start a fresh one
        # rather than fail the task.
        why = _stderr_line(proc) or proc.exit_text()
        note = f"cfn: resuming session {ctx.resume_session} failed ({why}); started a new one\n"
        fresh = msgspec.structs.replace(ctx, resume_session=None)
        argv = build_argv(cfg, task, fresh)
        proc = await _spawn(cfg, task, fresh, argv, cancel, b"")
        if isinstance(proc, ExecResult):
            return proc
        report = parse(proc)
    result = _preset_result(cfg, proc, report)
    result.stderr = note + result.stderr
    return result


def _stderr_line(proc: ProcOutcome) -> str:
    lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:300] if lines else ""


def _plain_result(proc: ProcOutcome) -> ExecResult:
    stdout = proc.stdout.decode("utf-8", "replace")
    return ExecResult(
        ok=proc.returncode == 0 and proc.stopped is None,
        exit_code=proc.returncode,
        output=stdout,
        stdout=stdout,
        stderr=proc.stderr.decode("utf-8", "replace"),
        truncated=proc.truncated,
    )


def _preset_result(
    cfg: ExecutorConfig, proc: ProcOutcome, report: presets.CliReport | None
) -> ExecResult:
    if report is None:  # not machine-readable output: the plain last-line rule
        result = _process_result(cfg, proc)
        if result.error == proc.exit_text():
            result.error = _exit_error_text(cfg, proc)
        return result
    result = _plain_result(proc)
    result.output = report.result
    result.session_id = report.session_id
    result.input_tokens, result.output_tokens = report.input_tokens, report.output_tokens
    result.num_turns = report.num_turns
    priced = report.input_tokens * cfg.usd_per_mtok_input
    priced += report.output_tokens * cfg.usd_per_mtok_output
    result.cost_usd = report.cost_usd if report.cost_usd is not None else priced / 1e6
    notes = list(report.notes)
    if proc.stopped is not None:
        result.ok, result.error = False, _stopped_error(cfg, proc.stopped)
    answer = presets.find_answer(report.result)
    if answer is not None:
        fields, more = presets.answer_fields(answer)
        notes += more
        result.output = fields.pop("output", result.output)
        ok = fields.pop("ok", True)
        for name, value in fields.items():
            setattr(result, name, value)
        if result.ok and not ok:
            result.ok, result.error = False, "the task reported ok=false"
    if notes:
        result.stderr += "".join(f"{n}\n" for n in notes)
    if result.error is not None:
        return result
    if report.error is not None:
        result.ok, result.error = False, report.error
    elif proc.returncode != 0:
        result.ok, result.error = False, _exit_error_text(cfg, proc)
    return result


def _exit_error_text(cfg: ExecutorConfig, proc: ProcOutcome) -> str:
    line = _stderr_line(proc)
    return f"{cfg.kind} exited with {proc.exit_text()}" + (f": {line}" if line else "")


def _process_result(cfg: ExecutorConfig, proc: ProcOutcome) -> ExecResult:
    result = _plain_result(proc)
    result.ok = proc.returncode == 0
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


Job = Callable[[], Callable[[], None]]


class _Threads:
    """Daemon threads reused across calls: a finished thread waits for the next call, so
    a task no longer pays a thread start; a stuck one is simply never reused (it never
    blocks shutdown, being a daemon thread), and a new thread is started instead."""

    IDLE_MAX = 8  # idle threads kept; beyond that a finished thread exits

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[queue.SimpleQueue[tuple[Job, str] | None]] = []

    def run(self, job: Job, name: str) -> None:
        """``job()`` runs in a thread and returns what to call once that thread is idle
        again (so the caller woken by it finds the thread free)."""
        with self.lock:
            inbox = self.idle.pop() if self.idle else None
        if inbox is not None:
            inbox.put((job, name))
            return
        inbox = queue.SimpleQueue()
        inbox.put((job, name))
        threading.Thread(target=self._serve, args=(inbox,), name=name, daemon=True).start()

    def _serve(self, inbox: queue.SimpleQueue[tuple[Job, str] | None]) -> None:
        while (item := inbox.get()) is not None:  # bounded: exits once not kept idle
            job, name = item
            # Named for the call it serves now (tracebacks and py-spy show the entry).
            threading.current_thread().name = name
            then = job()
            with self.lock:
                keep = len(self.idle) < self.IDLE_MAX
                if keep:
                    self.idle.append(inbox)
            then()
            if not keep:
                return


_THREADS = _Threads()


def _in_thread(func: Callable[..., Any], arg: Any) -> asyncio.Future[Any]:
    """Run ``func(arg)`` in a daemon thread: a stuck function never blocks shutdown."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    ctx = contextvars.copy_context()

    def settle(value: Any, exc: BaseException | None) -> None:
        if not fut.done():  # else: timed out or cancelled meanwhile
            fut.set_exception(exc) if exc is not None else fut.set_result(value)

    def worker() -> Callable[[], None]:
        value: Any = None
        exc: BaseException | None = None
        try:
            value = ctx.run(func, arg)
        except Exception as err:  # delivered to the awaiting coroutine
            exc = err
        except BaseException as err:  # SystemExit must not stop the event loop
            exc = _exit_error(err)

        def then() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed while we were stuck
                loop.call_soon_threadsafe(settle, value, exc)

        return then

    _THREADS.run(worker, f"cfn-exec-{getattr(func, '__name__', 'entry')}")
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
