#!/usr/bin/env python3
"""A stand-in for the Claude Code CLI in headless (``claude -p``) mode, for tests.

It parses the documented flags (unknown ones fail as the real CLI does), records each
call, edits files by rules the test gives it, honours the permission model (edits only
with ``--permission-mode acceptEdits``/``bypassPermissions``,
``--dangerously-skip-permissions`` or a matching ``--allowedTools`` entry; denials are
reported in ``permission_denials``) and prints the result in the real output formats.

Environment:

``FAKE_CLAUDE_LOG``
    File that gets one JSON line per call: ``argv`` (without the program), ``cwd``,
    ``env`` (the ``CFN_*`` variables), ``prompt``, ``time``, ``pid``, ``session_id``,
    ``rule`` (index of the matching rule or null), ``applied`` and ``denied`` edits.
``FAKE_CLAUDE_RULES``
    JSON file with a list of rules; the first that matches wins::

        {"match": "substring of the prompt", "regex": "or a regex (re.search)",
         "role": "must appear in --append-system-prompt",
         "when_resumed": true | false, "times": 1,
         "edits": [{"path": "rel/path", "write": "content"},
                   {"path": "f", "replace": ["old", "new"]},
                   {"path": "f", "append": "text"}, {"path": "f", "delete": true}],
         "result": "final text", "cost_usd": 0.4, "is_error": false, "exit": 0,
         "subtype": "success", "stderr": "text", "hang": false}

    ``times`` limits how often a rule applies (later rules then take over), so the 1st
    and 2nd call with one prompt can behave differently. ``hang`` blocks after the edits
    and the log line, until the process is killed (after printing
    ``fake agent: hanging until killed`` to stderr). With no match: no edits and the
    result ``{"confidence": 0.5}``.
``FAKE_CLAUDE_STATE``
    State file (rule counters, known sessions); defaults to ``$FAKE_CLAUDE_LOG.state``.
    While there is a state file, ``--resume`` of an unknown session fails like the real
    CLI.
``FAKE_CLAUDE_VERSION``
    What ``--version`` prints (default ``1.0.99 (Claude Code)``).

The rule, state and edit helpers here are shared with ``fake_codex.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

DEFAULT_RESULT = '{"confidence": 0.5}'
PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk")
OUTPUT_FORMATS = ("text", "json", "stream-json")
TOOLS = ["Task", "Bash", "Glob", "Grep", "LS", "Read", "Edit", "MultiEdit", "Write", "WebFetch"]


# ---------------------------------------------------------------------------- shared helpers


@dataclass
class Edit:
    """One file edit a rule asks for, as the tool the real agent would use for it."""

    path: str
    op: str  # write | replace | append | delete
    spec: dict[str, Any]

    @property
    def tool(self) -> str:
        return {"write": "Write", "delete": "Bash"}.get(self.op, "Edit")

    def tool_input(self, cwd: Path) -> dict[str, Any]:
        target = str(cwd / self.path)
        if self.op == "write":
            return {"file_path": target, "content": self.spec["write"]}
        if self.op == "replace":
            old, new = self.spec["replace"]
            return {"file_path": target, "old_string": old, "new_string": new}
        if self.op == "append":
            return {"file_path": target, "old_string": "", "new_string": self.spec["append"]}
        return {"command": f"rm {self.path}"}


@dataclass
class EditOutcome:
    """What happened to the edits of one call."""

    applied: list[Edit] = field(default_factory=list)
    denied: list[Edit] = field(default_factory=list)
    failed: list[tuple[Edit, str]] = field(default_factory=list)


def parse_edits(rule: dict[str, Any]) -> list[Edit]:
    """The rule's edits; a malformed one is a test bug, reported loudly."""
    edits = []
    for spec in rule.get("edits", []):
        ops = [op for op in ("write", "replace", "append", "delete") if op in spec]
        if "path" not in spec or len(ops) != 1:
            fail(f"fake agent: bad edit in rules: {spec!r}", code=3)
        edits.append(Edit(path=str(spec["path"]), op=ops[0], spec=spec))
    return edits


def inside(cwd: Path, rel: str) -> Path | None:
    """``rel`` resolved against ``cwd``, or None if it escapes ``cwd``."""
    root = cwd.resolve()
    target = (root / rel).resolve()
    return target if target == root or root in target.parents else None


def apply_edit(cwd: Path, edit: Edit) -> str | None:
    """Apply one edit; return an error text instead when it cannot be done."""
    target = inside(cwd, edit.path)
    if target is None or target == cwd.resolve():
        return f"{edit.path} is outside the working directory"
    if edit.op == "write":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(str(edit.spec["write"]))
    elif edit.op == "delete":
        if not target.exists():
            return f"rm: {edit.path}: No such file or directory"
        target.unlink()
    elif not target.is_file():
        return f"File does not exist: {edit.path}"
    elif edit.op == "append":
        with target.open("a") as fh:
            fh.write(str(edit.spec["append"]))
    else:
        old, new = (str(s) for s in edit.spec["replace"])
        text = target.read_text()
        if old not in text:
            return f"String to replace not found in file {edit.path}: {old!r}"
        target.write_text(text.replace(old, new, 1))
    return None


def apply_edits(cwd: Path, edits: Sequence[Edit], allowed: Callable[[Edit], bool]) -> EditOutcome:
    """Apply each edit ``allowed(edit)`` permits (and that stays inside ``cwd``)."""
    outcome = EditOutcome()
    for edit in edits:
        if inside(cwd, edit.path) is None or not allowed(edit):
            outcome.denied.append(edit)
            continue
        error = apply_edit(cwd, edit)
        if error is None:
            outcome.applied.append(edit)
        else:
            outcome.failed.append((edit, error))
    return outcome


def load_rules(env_var: str) -> list[dict[str, Any]]:
    """The rules from the JSON file ``$env_var`` names (none if unset)."""
    name = os.environ.get(env_var)
    if not name:
        return []
    rules = json.loads(Path(name).read_text())
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        fail(f"fake agent: {name} must hold a JSON list of rule objects", code=3)
    return rules


def rule_matches(
    rule: dict[str, Any], prompt: str, *, system: str, resumed: bool, used: int
) -> bool:
    """True if ``rule`` applies to this call (``used``: how often it applied before)."""
    if "match" in rule and str(rule["match"]) not in prompt:
        return False
    if "regex" in rule and not re.search(str(rule["regex"]), prompt):
        return False
    if "role" in rule and str(rule["role"]) not in system:
        return False
    if "when_resumed" in rule and bool(rule["when_resumed"]) != resumed:
        return False
    return "times" not in rule or used < int(rule["times"])


@contextlib.contextmanager
def locked_state(env_var: str, log_var: str) -> Iterator[dict[str, Any]]:
    """The state file's content, saved back on exit, under an exclusive lock (parallel
    agents share one state file)."""
    name = os.environ.get(env_var) or (
        os.environ[log_var] + ".state" if os.environ.get(log_var) else ""
    )
    if not name:
        yield {}
        return
    path = Path(name)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        state.setdefault("counters", {})
        state.setdefault("sessions", {})
        state.setdefault("last_session", {})
        state["enabled"] = True
        yield state
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)


def pick_rule(
    state: dict[str, Any],
    rules: Sequence[dict[str, Any]],
    prompt: str,
    *,
    system: str = "",
    resumed: bool = False,
) -> tuple[int | None, dict[str, Any]]:
    """The first matching rule (and its index), counted in ``state``; ({} if none)."""
    counters: dict[str, int] = state.get("counters", {})
    for index, rule in enumerate(rules):
        used = counters.get(str(index), 0)
        if rule_matches(rule, prompt, system=system, resumed=resumed, used=used):
            counters[str(index)] = used + 1
            return index, rule
    return None, {}


def append_log(env_var: str, record: dict[str, Any]) -> None:
    """Append one JSON line to the file ``$env_var`` names, if set."""
    name = os.environ.get(env_var)
    if not name:
        return
    with open(name, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def compact(value: Any) -> str:
    """JSON as the real CLIs print it (no spaces)."""
    return json.dumps(value, separators=(",", ":"))


def cfn_env() -> dict[str, str]:
    """The CFN_* variables this process was given."""
    return {k: v for k, v in os.environ.items() if k.startswith("CFN_")}


def hang_forever() -> NoReturn:
    """Block until killed (for timeout and cancellation tests).

    Says so on stderr first, so a test can wait for that line instead of sleeping.
    """
    sys.stdout.flush()
    print("fake agent: hanging until killed", file=sys.stderr, flush=True)
    threading.Event().wait()
    raise SystemExit(0)  # not reached


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code``."""
    print(message, file=sys.stderr)
    raise SystemExit(code)


def split_tools(values: Sequence[str]) -> list[str]:
    """Tool rules from comma- or space-separated lists; ``Bash(npm install)`` stays whole."""
    tools: list[str] = []
    for value in values:
        depth, current = 0, ""
        for ch in value:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth = max(depth - 1, 0)
            if depth == 0 and (ch == "," or ch.isspace()):
                if current:
                    tools.append(current)
                current = ""
            else:
                current += ch
        if current:
            tools.append(current)
    return tools


# ---------------------------------------------------------------------------- claude CLI


@dataclass
class Options:
    """The parsed command line."""

    print_mode: bool = False
    prompt: str | None = None
    output_format: str = "text"
    permission_mode: str = "default"
    allowed: list[str] = field(default_factory=list)
    disallowed: list[str] = field(default_factory=list)
    append_system_prompt: str = ""
    system_prompt: str = ""
    model: str = "claude-sonnet-4-5"
    max_turns_raw: str | None = None
    resume: str | None = None
    session_id: str | None = None
    continue_: bool = False
    skip_permissions: bool = False
    verbose: bool = False


_VALUE_OPTIONS = {
    "--output-format": "output_format",
    "--permission-mode": "permission_mode",
    "--append-system-prompt": "append_system_prompt",
    "--system-prompt": "system_prompt",
    "--model": "model",
    "--max-turns": "max_turns_raw",
    "--resume": "resume",
    "-r": "resume",
    "--session-id": "session_id",
}
_LIST_OPTIONS = {
    "--allowedTools": "allowed",
    "--allowed-tools": "allowed",
    "--disallowedTools": "disallowed",
    "--disallowed-tools": "disallowed",
}
_FLAGS = {
    "-p": "print_mode",
    "--print": "print_mode",
    "-c": "continue_",
    "--continue": "continue_",
    "--dangerously-skip-permissions": "skip_permissions",
    "--verbose": "verbose",
}


def usage_error(message: str) -> NoReturn:
    fail(f"error: {message}")


def parse_args(argv: Sequence[str]) -> Options:
    """Parse like commander.js does for the real CLI: unknown options are errors and the
    tool lists are variadic (they take every following word that is not an option)."""
    opts = Options()
    positionals: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positionals.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            continue
        name, eq, inline = arg.partition("=")
        if name in ("--version", "-v"):
            print(os.environ.get("FAKE_CLAUDE_VERSION", "1.0.99 (Claude Code)"))
            raise SystemExit(0)
        if name in ("--help", "-h"):
            print("Usage: claude [options] [command] [prompt]")
            raise SystemExit(0)
        if name in _FLAGS and not eq:
            setattr(opts, _FLAGS[name], True)
        elif name in _VALUE_OPTIONS:
            if eq:
                value = inline
            elif i < len(argv) and not argv[i].startswith("-"):
                value = argv[i]
                i += 1
            else:
                usage_error(f"option '{name} <value>' argument missing")
            setattr(opts, _VALUE_OPTIONS[name], value)
        elif name in _LIST_OPTIONS:
            values = [inline] if eq else []
            while not eq and i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            if not values:
                usage_error(f"option '{name} <tools...>' argument missing")
            getattr(opts, _LIST_OPTIONS[name]).extend(split_tools(values))
        else:
            usage_error(f"unknown option '{arg}'")
    if opts.output_format not in OUTPUT_FORMATS:
        usage_error(
            f"option '--output-format <format>' argument '{opts.output_format}' is invalid. "
            f"Allowed choices are {', '.join(OUTPUT_FORMATS)}."
        )
    if opts.permission_mode not in PERMISSION_MODES:
        usage_error(
            f"option '--permission-mode <mode>' argument '{opts.permission_mode}' is invalid. "
            f"Allowed choices are {', '.join(PERMISSION_MODES)}."
        )
    if opts.max_turns_raw is not None and not opts.max_turns_raw.isdigit():
        usage_error(f"option '--max-turns <turns>' argument '{opts.max_turns_raw}' is invalid.")
    if len(positionals) > 1:
        usage_error(f"too many arguments. Expected 1 argument but got {len(positionals)}.")
    opts.prompt = positionals[0] if positionals else None
    return opts


def tool_rule_allows(rule: str, edit: Edit) -> bool:
    """Does one ``--allowedTools`` entry (``Edit``, ``Edit(src/**)``, ``Bash(rm:*)``) cover
    ``edit``?"""
    name, _, spec = rule.partition("(")
    if name != edit.tool:
        return False
    if not spec:
        return True
    spec = spec.removesuffix(")")
    if edit.tool == "Bash":
        command = str(edit.tool_input(Path())["command"])
        prefix = spec.removesuffix(":*").removesuffix("*")
        return command == spec or (spec.endswith("*") and command.startswith(prefix))
    return fnmatch.fnmatch(edit.path, spec.removeprefix("./"))


def permits(opts: Options, edit: Edit) -> bool:
    """The real permission order: deny rules, then the mode, then allow rules."""
    if any(tool_rule_allows(rule, edit) for rule in opts.disallowed):
        return False
    if opts.permission_mode == "plan":
        return False  # plan mode never changes anything
    if opts.skip_permissions or opts.permission_mode == "bypassPermissions":
        return True
    if opts.permission_mode == "acceptEdits" and edit.tool in ("Edit", "Write"):
        return True
    return any(tool_rule_allows(rule, edit) for rule in opts.allowed)


def read_prompt(opts: Options) -> str:
    if opts.prompt is not None:
        return opts.prompt
    data = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    if not data.strip():
        fail(
            "Error: Input must be provided either through stdin or as a prompt argument "
            "when using --print"
        )
    return data


def session_for(opts: Options, state: dict[str, Any], cwd: str) -> tuple[str, bool]:
    """The session id to report, and whether this call resumes one."""
    sessions: dict[str, Any] = state.get("sessions", {})
    if opts.resume:
        if state.get("enabled") and opts.resume not in sessions:
            fail(f"No conversation found with session ID: {opts.resume}")
        return opts.resume, True
    if opts.continue_:
        last = state.get("last_session", {}).get(cwd)
        if state.get("enabled") and not last:
            fail("No conversation found to continue")
        return (last or str(uuid.uuid4())), True
    return opts.session_id or str(uuid.uuid4()), False


def denial_text(denied: Sequence[Edit]) -> str:
    items = ", ".join(f"{e.tool} on {e.path}" for e in denied)
    return f"Permission to edit was denied ({items}); no files were changed by those steps."


def tool_id() -> str:
    return "toolu_" + uuid.uuid4().hex[:24]


def stream_events(
    opts: Options, session: str, cwd: Path, outcome: EditOutcome, edits: Sequence[Edit]
) -> Iterator[dict[str, Any]]:
    """The messages stream-json prints before the result line."""
    yield {
        "type": "system",
        "subtype": "init",
        "cwd": str(cwd),
        "session_id": session,
        "tools": TOOLS,
        "model": opts.model,
        "permissionMode": opts.permission_mode,
        "apiKeySource": "none",
    }
    failures = {id(e): err for e, err in outcome.failed}
    for edit in edits:
        use_id = tool_id()
        yield {
            "type": "assistant",
            "message": {
                "role": "assistant",
                "type": "message",
                "model": opts.model,
                "content": [
                    {
                        "type": "tool_use",
                        "id": use_id,
                        "name": edit.tool,
                        "input": edit.tool_input(cwd),
                    }
                ],
            },
            "parent_tool_use_id": None,
            "session_id": session,
        }
        if any(e is edit for e in outcome.denied):
            content, is_error = f"Claude requested permissions to use {edit.tool}.", True
        elif id(edit) in failures:
            content, is_error = failures[id(edit)], True
        else:
            content, is_error = f"Updated {edit.path}", False
        yield {
            "type": "user",
            "message": {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": use_id,
                        "content": content,
                        "is_error": is_error,
                    }
                ],
            },
            "parent_tool_use_id": None,
            "session_id": session,
        }


def main(argv: Sequence[str]) -> int:
    started = time.monotonic()
    opts = parse_args(argv)
    if not opts.print_mode:
        fail("fake_claude: only print mode (-p/--print) is emulated")
    if opts.output_format == "stream-json" and not opts.verbose:
        fail("Error: When using --print, --output-format=stream-json requires --verbose")
    prompt = read_prompt(opts)
    cwd = Path.cwd()
    rules = load_rules("FAKE_CLAUDE_RULES")
    with locked_state("FAKE_CLAUDE_STATE", "FAKE_CLAUDE_LOG") as state:
        session, resumed = session_for(opts, state, str(cwd))
        index, rule = pick_rule(
            state, rules, prompt, system=opts.append_system_prompt, resumed=resumed
        )
        if state.get("enabled"):
            calls = state["sessions"].get(session, {}).get("calls", 0)
            state["sessions"][session] = {"cwd": str(cwd), "calls": calls + 1}
            state["last_session"][str(cwd)] = session

    edits = parse_edits(rule)
    turn_budget = int(opts.max_turns_raw) if opts.max_turns_raw is not None else None
    out_of_turns = turn_budget is not None and len(edits) + 1 > turn_budget
    attempted = edits[: turn_budget or 0] if out_of_turns else edits
    outcome = apply_edits(cwd, attempted, lambda e: permits(opts, e))

    append_log(
        "FAKE_CLAUDE_LOG",
        {
            "argv": list(argv),
            "cwd": str(cwd),
            "env": cfn_env(),
            "prompt": prompt,
            "time": time.time(),
            "pid": os.getpid(),
            "session_id": session,
            "resumed": resumed,
            "rule": index,
            "applied": [e.path for e in outcome.applied],
            "denied": [e.path for e in outcome.denied],
        },
    )
    if rule.get("hang"):
        hang_forever()
    if rule.get("stderr"):
        print(rule["stderr"], file=sys.stderr)

    result = str(rule.get("result", DEFAULT_RESULT))
    if outcome.denied:
        result = f"{denial_text(outcome.denied)}\n\n{result}"
    if outcome.failed:
        result = "\n".join(err for _, err in outcome.failed) + f"\n\n{result}"
    is_error = bool(rule.get("is_error", False))
    subtype = str(rule.get("subtype", "error_during_execution" if is_error else "success"))
    num_turns = int(rule.get("num_turns", len(attempted) + 1))
    if out_of_turns:
        subtype, is_error, num_turns = "error_max_turns", True, int(turn_budget or 0)
    elapsed = int((time.monotonic() - started) * 1000)
    envelope: dict[str, Any] = {
        "type": "result",
        "subtype": subtype,
        "is_error": is_error,
        "duration_ms": elapsed,
        "duration_api_ms": elapsed,
        "num_turns": num_turns,
        "result": result,
        "session_id": session,
        "total_cost_usd": float(rule.get("cost_usd", 0.01)),
        "usage": {
            "input_tokens": max(1, len(prompt) // 4),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": max(1, len(result) // 4),
        },
        "permission_denials": [
            {"tool_name": e.tool, "tool_use_id": tool_id(), "tool_input": e.tool_input(cwd)}
            for e in outcome.denied
        ],
    }
    if out_of_turns:
        envelope["errors"] = [f"Reached maximum number of turns ({turn_budget})"]

    if opts.output_format == "json":
        print(compact(envelope))
    elif opts.output_format == "stream-json":
        for event in stream_events(opts, session, cwd, outcome, attempted):
            print(compact(event))
        text = {"type": "text", "text": result}
        answer = {"role": "assistant", "model": opts.model, "content": [text]}
        print(
            compact(
                {
                    "type": "assistant",
                    "message": answer,
                    "parent_tool_use_id": None,
                    "session_id": session,
                }
            )
        )
        print(compact(envelope))
    else:
        print(result)
    return int(rule.get("exit", 0))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
