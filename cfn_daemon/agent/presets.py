"""Agent CLI presets: the argv of Claude Code (``claude -p``) and Codex (``codex exec``),
the role contracts they are given, and how their machine-readable output is read.

Roles follow the task context (``TaskContext.role``): an implementer may edit files in
its workspace; a validator or the owner (and any ``read_only`` task) gets read-only
tools (claude) or the read-only sandbox (codex). Each role is told, in
``ROLE_CONTRACTS``, which JSON to end its answer with; ``find_answer`` reads it back from
anywhere near the end of the answer (a last line, a fenced block, the whole text).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from cfn_daemon.agent.exectypes import ExecutorConfig, Role, TaskContext, TaskInput, substitute
from cfn_daemon.agent.proc import ProcOutcome
from cfn_daemon.util.text import without_nul

__all__ = ["READ_ONLY_TOOLS", "ROLE_CONTRACTS", "CliReport", "claude_argv", "codex_argv"]
__all__ += ["answer_fields", "find_answer", "parse_claude", "parse_codex", "role_contract"]

# Every role's contract in one place: what to do, and the JSON to end with.
ROLE_CONTRACTS: dict[Role, str] = {
    "implementer": (
        "You are an implementer in a cfn swarm. Make the requested change in the current "
        "working directory (a git worktree): edit the files, keep the change focused and "
        "run the relevant tests if you can. Do not commit, push or switch branches. "
        "End your answer with one line of JSON: "
        '{"confidence": <0..1: how sure you are the change is complete and correct>, '
        '"summary": "<what you changed>"}'
    ),
    "validator": (
        "You are a validator in a cfn swarm. Review the work the prompt describes; the "
        "candidate change is in the current working directory. Do not modify any file. "
        "End your answer with one line of JSON: "
        '{"vote": "approve"|"reject", "confidence": <0..1>, "feedback": [{"severity": '
        '"high"|"medium"|"low", "message": "<what is wrong and how to fix it>", '
        '"location": "file:line"}]} (feedback lists what must change; empty to approve).'
    ),
    "owner": (
        "You are the product owner of a cfn swarm. Decide on the work the prompt "
        "summarises. Do not modify any file. End your answer with one line of JSON: "
        '{"decision": "PROCEED"|"DEFER"|"ESCALATE"|"ITERATE"|"ABORT", "reason": "<why>", '
        '"backlog": ["<follow-up item>", ...]}'
    ),
}
# What a validator or the owner may use in claude's print mode (which denies every tool
# not allowed): reading the tree and its git history, nothing that writes.
READ_ONLY_TOOLS = (
    *("Read", "Grep", "Glob", "LS"),
    *("Bash(git diff:*)", "Bash(git log:*)", "Bash(git show:*)", "Bash(git status:*)"),
)
IMPLEMENTER_MODE = "acceptEdits"
READ_ONLY_MODE = "default"  # "plan" would make it plan instead of reviewing
DECISIONS = ("PROCEED", "DEFER", "ESCALATE", "ITERATE", "ABORT")
ANSWER_KEYS = frozenset({"output", "confidence", "vote", "feedback", "ok"})
ANSWER_KEYS |= {"decision", "reason", "backlog", "summary"}
ANSWER_WINDOW = 32 << 10  # the answer JSON is looked for near the end of the text
ANSWER_TRIES = 4000


def role_contract(ctx: TaskContext) -> str:
    text = ROLE_CONTRACTS[ctx.role]
    if ctx.role == "implementer" and ctx.read_only:
        text += " This task is read-only: change no file."
    if ctx.base_ref and ctx.role != "implementer":
        text += f" The candidate change is `git diff {ctx.base_ref}`."
    return text


def safe_prompt(text: str) -> str:
    # Both CLIs parse a leading "-" as an option; a space keeps it the prompt. A NUL
    # (say, in an implementer's output quoted to validators) cannot pass argv.
    text = without_nul(text)
    return f" {text}" if text.startswith("-") else text


def claude_argv(
    cfg: ExecutorConfig, task: TaskInput, ctx: TaskContext, *, resume: bool
) -> list[str]:
    """``claude -p PROMPT --output-format json --permission-mode M ...`` for this task."""
    argv = [cfg.program or "claude", "-p", safe_prompt(task.text), "--output-format", "json"]
    if ctx.writes:
        argv += ["--permission-mode", cfg.permission_mode or IMPLEMENTER_MODE]
        tools = list(cfg.allowed_tools)
    else:  # never acceptEdits: only the read-only tools (plus what the config adds)
        argv += ["--permission-mode", READ_ONLY_MODE]
        tools = [*READ_ONLY_TOOLS, *(t for t in cfg.allowed_tools if t not in READ_ONLY_TOOLS)]
    if tools:
        # One comma-separated word: the option is variadic and would swallow the next one.
        argv += ["--allowedTools", ",".join(tools)]
    argv += ["--append-system-prompt", role_contract(ctx)]
    if cfg.model:
        argv += ["--model", cfg.model]
    if cfg.max_turns is not None:
        argv += ["--max-turns", str(cfg.max_turns)]
    if resume and ctx.resume_session:
        argv += ["--resume", ctx.resume_session]
    return argv + [substitute(a, task) for a in cfg.args]


def codex_argv(
    cfg: ExecutorConfig, task: TaskInput, ctx: TaskContext, *, resume: bool
) -> list[str]:
    """``codex exec --json --sandbox S -C WORKSPACE ... [resume SESSION] PROMPT``.

    The options come before ``resume``: they belong to ``exec``. Codex has no
    system-prompt flag, so the role contract follows the task text in the prompt.
    """
    argv = [cfg.program or "codex", "exec", "--json"]
    argv += ["--sandbox", "workspace-write" if ctx.writes else "read-only"]
    if ctx.workspace:
        argv += ["-C", ctx.workspace]
    else:  # cfn chose no git worktree; codex refuses to run outside one by default
        argv.append("--skip-git-repo-check")
    if cfg.model:
        argv += ["--model", cfg.model]
    argv += [substitute(a, task) for a in cfg.args]
    if resume and ctx.resume_session:
        argv += ["resume", ctx.resume_session]
    return [*argv, safe_prompt(f"{task.text}\n\n{role_contract(ctx)}")]


# --------------------------------------------------------------------------- output


class CliReport(msgspec.Struct, kw_only=True):
    """What an agent CLI's machine-readable output said about the run."""

    result: str = ""
    error: str | None = None  # the CLI reported a failure
    session_id: str | None = None
    cost_usd: float | None = None  # None: the CLI reports no price
    input_tokens: int = 0
    output_tokens: int = 0
    num_turns: int = 0
    notes: list[str] = []  # for stderr: what the user should know (denied tools...)


def _stdout_complete(proc: ProcOutcome) -> bool:
    return proc.stdout_total <= len(proc.stdout)


def stdout_lines(proc: ProcOutcome) -> list[str]:
    """The complete stdout lines that were kept: all of them, or when the cap cut out
    the middle, those of the head and of the tail (the cut lines are dropped)."""
    head, tail = proc.stdout, proc.stdout_tail
    tail_start = proc.stdout_total - len(tail)
    if tail_start <= len(head):  # head and tail overlap or touch: that is all of it
        data = head + tail[len(head) - tail_start :]
        return data.decode("utf-8", "replace").splitlines()
    lines = head.split(b"\n")[:-1] + tail.split(b"\n")[1:]
    return [line.decode("utf-8", "replace") for line in lines]


def _json_object(text: str) -> dict[str, Any] | None:
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _claude_envelope(proc: ProcOutcome) -> dict[str, Any] | None:
    """The ``type: result`` object of ``--output-format json`` (one object) or
    ``stream-json`` (the last line)."""
    candidates: list[str] = []
    if _stdout_complete(proc):
        candidates.append(proc.stdout.decode("utf-8", "replace"))
        candidates += reversed(candidates[0].splitlines()[-3:])
    else:
        line = proc.last_stdout_line()
        candidates += [line] if line else []
    for text in candidates:
        obj = _json_object(text)
        if obj is not None and obj.get("type") == "result":
            return obj
    return None


def parse_claude(proc: ProcOutcome) -> CliReport | None:
    """The JSON envelope on stdout; None when stdout is no envelope (text output)."""
    env = _claude_envelope(proc)
    if env is None:
        return None
    usage = env.get("usage") if isinstance(env.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    cost = env.get("total_cost_usd", env.get("cost_usd"))
    report = CliReport(
        result=env["result"] if isinstance(env.get("result"), str) else "",
        session_id=env["session_id"] if isinstance(env.get("session_id"), str) else None,
        cost_usd=float(cost) if isinstance(cost, int | float) else None,
        # Cached input is input the model read too (it is billed, at another rate).
        input_tokens=sum(
            _int(usage.get(k))
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        ),
        output_tokens=_int(usage.get("output_tokens")),
        num_turns=_int(env.get("num_turns")),
    )
    if env.get("is_error") is True:
        subtype = str(env.get("subtype") or "error")
        errors = env.get("errors")
        if subtype != "success":
            report.error = f"claude reported {subtype} after {report.num_turns} turns"
        else:
            first = report.result.strip().splitlines()[:1]
            report.error = f"claude reported an error: {(first or ['?'])[0][:300]}"
        if isinstance(errors, list) and errors:
            report.error += f" ({'; '.join(str(e) for e in errors)[:300]})"
    denials = env.get("permission_denials")
    if isinstance(denials, list) and denials:
        tools = ", ".join(str(d.get("tool_name", "?")) for d in denials if isinstance(d, dict))
        report.notes.append(f"cfn: claude was denied {len(denials)} tool use(s): {tools}")
    return report


def _codex_events(proc: ProcOutcome) -> Iterator[dict[str, Any]]:
    for line in stdout_lines(proc):
        obj = _json_object(line)
        if obj is not None and isinstance(obj.get("type"), str):
            yield obj


def parse_codex(proc: ProcOutcome) -> CliReport | None:
    """The JSONL events of ``codex exec --json``; None when there are none."""
    report = CliReport()
    seen = False
    failure: str | None = None
    errors: list[str] = []
    for ev in _codex_events(proc):
        kind = ev["type"]
        item = ev.get("item") if isinstance(ev.get("item"), dict) else {}
        assert isinstance(item, dict)
        if kind == "thread.started":
            seen = True
            thread = ev.get("thread_id")
            report.session_id = thread if isinstance(thread, str) else report.session_id
        elif kind == "item.completed" and item.get("type") == "agent_message":
            report.result = str(item.get("text", ""))
        elif kind == "turn.completed":
            usage = ev.get("usage") if isinstance(ev.get("usage"), dict) else {}
            assert isinstance(usage, dict)
            report.input_tokens += _int(usage.get("input_tokens"))
            report.output_tokens += _int(usage.get("output_tokens"))
            report.num_turns += 1
        elif kind == "turn.failed":
            error = ev.get("error")
            message = error.get("message") if isinstance(error, dict) else error
            failure = str(message or "turn failed")
        elif kind == "error":
            errors.append(str(ev.get("message") or "error"))
        else:
            continue
        seen = True
    if not seen:
        return None
    if failure is not None:
        report.error = f"codex reported a failed turn: {failure[:300]}"
    elif errors and report.num_turns == 0:
        # Codex also emits "error" for retried stream hiccups; only without a
        # completed turn is it the outcome.
        report.error = f"codex reported an error: {errors[-1][:300]}"
    return report


# --------------------------------------------------------------------------- answers


def find_answer(text: str) -> dict[str, Any] | None:
    """The answer JSON object in an agent's final text: the one ending last (the
    outermost one, if nested) among objects with an answer key such as ``confidence``,
    ``vote`` or ``decision``. Found anywhere near the end: a last line, a fenced
    ```json block, the whole text, or inline after prose."""
    decoder = json.JSONDecoder()
    floor = max(0, len(text) - ANSWER_WINDOW)
    best: dict[str, Any] | None = None
    best_end = -1
    pos = text.rfind("{", floor)
    for _ in range(ANSWER_TRIES):
        if pos < 0:
            break
        try:
            obj, end = decoder.raw_decode(text, pos)
        except ValueError:
            obj, end = None, -1
        if isinstance(obj, dict) and ANSWER_KEYS & obj.keys() and end >= best_end:
            best, best_end = obj, end
        pos = text.rfind("{", floor, pos)
    return best


def _issue(item: Any) -> Any:
    # The contract names no issue type; core.votes needs one to keep the severity.
    if isinstance(item, Mapping) and "message" in item:
        out = dict(item)
        out.setdefault("type", "quality")
        if isinstance(out.get("severity"), str):
            out["severity"] = out["severity"].lower()
        return out
    return item


def answer_fields(obj: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """ExecResult fields from an agent's answer JSON, leniently: a malformed field is
    dropped (with a note) rather than failing a whole, possibly costly, run."""
    out: dict[str, Any] = {}
    notes: list[str] = []
    conf = obj.get("confidence")
    if conf is not None:
        if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0 <= conf <= 1:
            notes.append(f"cfn: ignored `confidence` {conf!r}: expected a number in [0, 1]")
        else:
            out["confidence"] = float(conf)
    vote = obj.get("vote")
    if vote is not None:
        if isinstance(vote, str) and vote.strip().lower() in ("approve", "reject"):
            out["vote"] = vote.strip().lower()
        else:
            notes.append(f"cfn: ignored `vote` {vote!r}: expected 'approve' or 'reject'")
    if isinstance(obj.get("ok"), bool):
        out["ok"] = obj["ok"]
    if isinstance(obj.get("output"), str):
        out["output"] = obj["output"]
    feedback = obj.get("feedback")
    if isinstance(feedback, list):
        out["feedback"] = [_issue(item) for item in feedback]
    elif isinstance(feedback, str):
        out["feedback"] = feedback
    decision = obj.get("decision")
    if isinstance(decision, str) and decision.strip().upper() in DECISIONS:
        # core.run_records.owner_decision reads "WORD: reason" and the backlog list.
        reason = obj.get("reason") or obj.get("summary") or ""
        out["output"] = f"{decision.strip().upper()}: {reason}".rstrip(": ")
        if isinstance(obj.get("backlog"), list):
            out["feedback"] = [str(x) for x in obj["backlog"]]
    elif decision is not None:
        notes.append(
            f"cfn: ignored `decision` {decision!r}: expected one of {', '.join(DECISIONS)}"
        )
    return out, notes
