#!/usr/bin/env python3
"""A stand-in for the OpenAI Codex CLI's ``codex exec`` (non-interactive) mode, for tests.

Emulated: ``codex --version``; ``codex exec [OPTIONS] [PROMPT]`` and
``codex exec resume [OPTIONS] (SESSION_ID | --last) [PROMPT]`` with ``--json``
(``--experimental-json``), ``-s/--sandbox read-only|workspace-write|danger-full-access``,
``--full-auto``, ``--dangerously-bypass-approvals-and-sandbox``, ``-C/--cd DIR``,
``-m/--model M``, ``-c/--config key=value`` (``sandbox_mode`` and ``model`` are honoured),
``-o/--output-last-message FILE``, ``--color`` and ``--skip-git-repo-check``. A missing
or ``-`` prompt is read from stdin. Unknown arguments fail as clap does (exit 2).

As the real one, it refuses to run outside a git repository unless
``--skip-git-repo-check`` is given, and may edit files only when the sandbox allows
writing (``workspace-write``, ``danger-full-access`` or the bypass flag); under the
default ``read-only`` sandbox the edits fail and the final message says so.

``--json`` prints the JSONL events of ``codex exec --json``: ``thread.started``
(``thread_id``), ``turn.started``, ``item.completed`` for each ``file_change`` and the
final ``agent_message``, then ``turn.completed`` with ``usage`` (``input_tokens``,
``cached_input_tokens``, ``output_tokens``), or ``turn.failed`` for an ``is_error`` rule.
Without ``--json`` the final message goes to stdout and a progress log to stderr.

Rules, log and state work as in ``fake_claude.py``, with ``FAKE_CODEX_RULES``,
``FAKE_CODEX_LOG``, ``FAKE_CODEX_STATE`` and ``FAKE_CODEX_VERSION`` (default
``codex-cli 0.46.0``). Differences: ``role`` is matched against the prompt (codex has no
system-prompt flag), ``cost_usd`` is ignored (codex reports no cost), and ``exit``
defaults to 1 for an ``is_error`` rule. The log records ``thread_id`` and ``sandbox``.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

if __package__ in (None, ""):
    # Run as a script: make `tests.agents` importable from the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.agents.fake_claude import (
    DEFAULT_RESULT,
    Edit,
    append_log,
    apply_edits,
    cfn_env,
    compact,
    fail,
    hang_forever,
    load_rules,
    locked_state,
    parse_edits,
    pick_rule,
)

SANDBOXES = ("read-only", "workspace-write", "danger-full-access")
EXEC_USAGE = "Usage: codex exec [OPTIONS] [PROMPT]"


@dataclass
class Options:
    """The parsed command line."""

    json: bool = False
    sandbox: str = "read-only"
    sandbox_given: bool = False
    full_auto: bool = False
    bypass: bool = False
    cd: str | None = None
    model: str = "gpt-5-codex"
    output_last_message: str | None = None
    skip_git_repo_check: bool = False
    resume: bool = False
    resume_last: bool = False
    session_id: str | None = None
    prompt: str | None = None


def clap_error(message: str, usage: str = EXEC_USAGE) -> NoReturn:
    fail(f"error: {message}\n\n{usage}\n\nFor more information, try '--help'.", code=2)


_VALUE_OPTIONS = {
    "-s": "sandbox",
    "--sandbox": "sandbox",
    "-C": "cd",
    "--cd": "cd",
    "-m": "model",
    "--model": "model",
    "-o": "output_last_message",
    "--output-last-message": "output_last_message",
    "--color": "",
    "-c": "",
    "--config": "",
}
_FLAGS = {
    "--json": "json",
    "--experimental-json": "json",
    "--full-auto": "full_auto",
    "--dangerously-bypass-approvals-and-sandbox": "bypass",
    "--skip-git-repo-check": "skip_git_repo_check",
}


def apply_config(opts: Options, item: str) -> None:
    key, eq, raw = item.partition("=")
    if not eq:
        clap_error(f"invalid value '{item}' for '--config <key=value>': expected key=value")
    value = raw.strip().strip("\"'")
    if key.strip() == "sandbox_mode":
        opts.sandbox, opts.sandbox_given = value, True
    elif key.strip() == "model":
        opts.model = value


def parse_args(argv: Sequence[str]) -> Options:
    """Parse ``[exec [resume]] OPTIONS [SESSION_ID] [PROMPT]``."""
    opts = Options()
    positionals: list[str] = []
    seen_exec = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positionals.extend(argv[i:])
            break
        if arg in ("--version", "-V"):
            print(os.environ.get("FAKE_CODEX_VERSION", "codex-cli 0.46.0"))
            raise SystemExit(0)
        if arg in ("--help", "-h"):
            print(EXEC_USAGE)
            raise SystemExit(0)
        if not arg.startswith("-") or arg == "-":
            if not seen_exec:
                if arg not in ("exec", "e"):
                    fail("fake_codex: only `codex exec` is emulated")
                seen_exec = True
            elif arg == "resume" and not opts.resume and not positionals:
                opts.resume = True
            else:
                positionals.append(arg)
            continue
        name, eq, inline = arg.partition("=")
        if name in _FLAGS and not eq:
            setattr(opts, _FLAGS[name], True)
        elif name == "--last" and opts.resume:
            opts.resume_last = True
        elif name in _VALUE_OPTIONS:
            if eq:
                value = inline
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                clap_error(f"a value is required for '{name} <VALUE>' but none was supplied")
            attr = _VALUE_OPTIONS[name]
            if name in ("-c", "--config"):
                apply_config(opts, value)
            elif attr:
                setattr(opts, attr, value)
                opts.sandbox_given = opts.sandbox_given or attr == "sandbox"
        else:
            clap_error(
                f"unexpected argument '{arg}' found\n\n"
                f"  tip: to pass '{arg}' as a value, use '-- {arg}'"
            )
    if not seen_exec:
        fail("fake_codex: only `codex exec` is emulated")
    if opts.sandbox not in SANDBOXES:
        clap_error(
            f"invalid value '{opts.sandbox}' for '--sandbox <SANDBOX_MODE>'\n"
            f"  [possible values: {', '.join(SANDBOXES)}]"
        )
    if opts.full_auto and not opts.sandbox_given:
        opts.sandbox = "workspace-write"
    if opts.resume and not opts.resume_last:
        if not positionals:
            clap_error("the following required arguments were not provided:\n  <SESSION_ID>")
        opts.session_id = positionals.pop(0)
    if len(positionals) > 1:
        clap_error(f"unexpected argument '{positionals[1]}' found")
    opts.prompt = positionals[0] if positionals else None
    return opts


def in_git_repo(path: Path) -> bool:
    return any((p / ".git").exists() for p in (path, *path.parents))


def read_prompt(opts: Options) -> str:
    if opts.prompt is not None and opts.prompt != "-":
        return opts.prompt
    data = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    if not data.strip():
        fail("No prompt provided. Either specify one as an argument or pipe the prompt into stdin.")
    return data


def can_write(opts: Options) -> bool:
    return opts.bypass or opts.sandbox in ("workspace-write", "danger-full-access")


def thread_for(opts: Options, state: dict[str, Any], cwd: str) -> str:
    sessions: dict[str, Any] = state.get("sessions", {})
    if opts.resume_last:
        last = state.get("last_session", {}).get(cwd)
        if state.get("enabled") and not last:
            fail("Error: no previous session found to resume")
        return str(last or uuid.uuid4())
    if opts.session_id:
        if state.get("enabled") and opts.session_id not in sessions:
            fail(f"Error: no rollout found for thread id {opts.session_id}")
        return opts.session_id
    return str(uuid.uuid4())


def change_kind(edit: Edit, existed: bool) -> str:
    if edit.op == "delete":
        return "delete"
    return "update" if existed else "add"


def main(argv: Sequence[str]) -> int:
    opts = parse_args(argv)
    if opts.cd is not None:
        try:
            os.chdir(opts.cd)
        except OSError as exc:
            fail(f"Error: cannot change to {opts.cd}: {exc.strerror}")
    cwd = Path.cwd()
    if not opts.skip_git_repo_check and not in_git_repo(cwd):
        fail("Not inside a trusted directory and --skip-git-repo-check was not specified.")
    prompt = read_prompt(opts)
    rules = load_rules("FAKE_CODEX_RULES")
    with locked_state("FAKE_CODEX_STATE", "FAKE_CODEX_LOG") as state:
        thread = thread_for(opts, state, str(cwd))
        resumed = opts.resume
        index, rule = pick_rule(state, rules, prompt, system=prompt, resumed=resumed)
        if state.get("enabled"):
            calls = state["sessions"].get(thread, {}).get("calls", 0)
            state["sessions"][thread] = {"cwd": str(cwd), "calls": calls + 1}
            state["last_session"][str(cwd)] = thread

    edits = parse_edits(rule)
    existed = {id(e): (cwd / e.path).exists() for e in edits}
    outcome = apply_edits(cwd, edits, lambda _edit: can_write(opts))
    append_log(
        "FAKE_CODEX_LOG",
        {
            "argv": list(argv),
            "cwd": str(cwd),
            "env": cfn_env(),
            "prompt": prompt,
            "time": time.time(),
            "pid": os.getpid(),
            "thread_id": thread,
            "resumed": resumed,
            "sandbox": "danger-full-access" if opts.bypass else opts.sandbox,
            "rule": index,
            "applied": [e.path for e in outcome.applied],
            "denied": [e.path for e in outcome.denied],
        },
    )
    if rule.get("hang"):
        hang_forever()
    if rule.get("stderr"):
        print(rule["stderr"], file=sys.stderr)

    message = str(rule.get("result", DEFAULT_RESULT))
    if outcome.denied:
        paths = ", ".join(e.path for e in outcome.denied)
        message = (
            f"I could not modify {paths}: the sandbox is {opts.sandbox} and does not allow "
            f"writing there.\n\n{message}"
        )
    is_error = bool(rule.get("is_error", False))
    events: list[dict[str, Any]] = [
        {"type": "thread.started", "thread_id": thread},
        {"type": "turn.started"},
    ]
    failed = {id(e) for e, _ in outcome.failed} | {id(e) for e in outcome.denied}
    for n, edit in enumerate(edits):
        events.append(
            {
                "type": "item.completed",
                "item": {
                    "id": f"item_{n}",
                    "type": "file_change",
                    "changes": [
                        {"path": str(cwd / edit.path), "kind": change_kind(edit, existed[id(edit)])}
                    ],
                    "status": "failed" if id(edit) in failed else "completed",
                },
            }
        )
    usage = {
        "input_tokens": max(1, len(prompt) // 4),
        "cached_input_tokens": 0,
        "output_tokens": max(1, len(message) // 4),
    }
    if is_error:
        events.append({"type": "turn.failed", "error": {"message": message}})
    else:
        events.append(
            {
                "type": "item.completed",
                "item": {"id": f"item_{len(edits)}", "type": "agent_message", "text": message},
            }
        )
        events.append({"type": "turn.completed", "usage": usage})

    if opts.json:
        for event in events:
            print(compact(event))
    else:
        print(
            f"OpenAI Codex (fake)\n--------\nworkdir: {cwd}\nmodel: {opts.model}\n"
            f"sandbox: {opts.sandbox}\nsession id: {thread}\n--------\nuser\n{prompt}",
            file=sys.stderr,
        )
        if is_error:
            print(f"ERROR: {message}", file=sys.stderr)
        else:
            print(message)
    if opts.output_last_message and not is_error:
        Path(opts.output_last_message).write_text(message)
    return int(rule.get("exit", 1 if is_error else 0))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
