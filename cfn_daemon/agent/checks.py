"""Checks as validators, and whether an agent type's program can be found.

Kind ``check`` runs a plain command (``exec``, or the task text with ``sh -c``) in the
task's workspace; it succeeds with exit status 0. A validator task (context kind
``validate``) of a ``check`` or ``command`` executor that printed no vote votes by its
exit status (``vote_by_exit``): 0 approves, anything else rejects with the end of the
output as one high-severity issue, so implementers see what failed.
"""

from __future__ import annotations

import os
import shutil

from cfn_daemon.agent.exectypes import ExecResult, ExecutorConfig, TaskInput, substitute
from cfn_daemon.agent.proc import run_process

__all__ = ["INSTALL_HINTS", "binary_version", "check_argv", "find_program", "output_tail"]
__all__ += ["program_problem", "vote_by_exit"]

VOTING_KINDS = ("check", "command")
TAIL_LINES = 40
TAIL_BYTES = 4096
# core.consensus.IssueType has no "check": "testing" keeps the issue (and its severity)
# when core.votes parses the feedback.
CHECK_ISSUE_TYPE = "testing"
VERSION_TIMEOUT_S = 5.0
INSTALL_HINTS = {
    "claude": "install Claude Code (npm install -g @anthropic-ai/claude-code)",
    "codex": "install Codex (npm install -g @openai/codex)",
}


def check_argv(cfg: ExecutorConfig, task: TaskInput) -> list[str]:
    if cfg.exec:
        return [substitute(a, task) for a in cfg.exec]
    return ["sh", "-c", task.text]


def output_tail(stdout: str, stderr: str) -> str:
    """The last ``TAIL_LINES`` lines of stdout then stderr, at most ``TAIL_BYTES``."""
    lines = [*stdout.rstrip("\n").splitlines(), *stderr.rstrip("\n").splitlines()]
    text = "\n".join(line for line in lines[-TAIL_LINES:])
    data = text.encode()
    if len(data) > TAIL_BYTES:
        cut = data[-TAIL_BYTES:].decode("utf-8", "ignore")
        text = cut.split("\n", 1)[1] if "\n" in cut else cut
    return text.strip("\n")


def vote_by_exit(res: ExecResult, cfg: ExecutorConfig, task: TaskInput) -> ExecResult:
    """Give a validator's check result a vote from its exit status (see the module doc).

    A check that ran is a completed validation whatever it found, so the task succeeds
    (no retry of a failing test suite); a cancelled or unstartable one casts no vote.
    """
    if res.vote is not None or cfg.kind not in VOTING_KINDS:
        return res
    if res.exit_code is None or res.error == "cancelled":
        return res
    res.confidence = 1.0
    if res.exit_code == 0 and res.error is None:
        res.vote, res.ok = "approve", True
        return res
    argv = check_argv(cfg, task) if cfg.kind == "check" else [substitute(a, task) for a in cfg.exec]
    command = argv[-1] if argv[:2] == ["sh", "-c"] else " ".join(argv)
    why = res.error or f"exit status {res.exit_code}"
    tail = output_tail(res.stdout, res.stderr)
    message = f"`{command[:200]}` failed ({why})" + (f":\n{tail}" if tail else "")
    res.vote, res.ok, res.error = "reject", True, None
    res.feedback = [{"type": CHECK_ISSUE_TYPE, "severity": "high", "message": message}]
    if not res.output.strip():
        res.output = message
    return res


# --------------------------------------------------------------------------- programs


def find_program(cfg: ExecutorConfig) -> str | None:
    """The full path of the config's program, or None when it cannot be found.

    Looked up on the PATH the executor will run with (``env`` may change it); a path
    with a slash is taken relative to ``workdir``.
    """
    program = cfg.program
    if program is None:
        return None
    if os.sep in program:
        path = os.path.join(cfg.workdir or os.getcwd(), program)
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which(program, path=cfg.env.get("PATH", os.environ.get("PATH")))


def program_problem(cfg: ExecutorConfig, type_name: str) -> str | None:
    """Why agents of this type cannot start their program, and how to fix it; None if
    they can (or their kind starts none: ``python``)."""
    program = cfg.program
    if program is None or "{" in program or find_program(cfg) is not None:
        return None
    where = "" if os.sep in program else " on PATH"
    table = f"[agent_types.{type_name}]"
    if cfg.kind in INSTALL_HINTS:
        fix = f"{INSTALL_HINTS[cfg.kind]}, or set `binary` in {table} to its full path"
    elif cfg.kind in ("command", "check") and cfg.exec:
        fix = f"install it, or fix `exec` in {table}"
    else:
        fix = "install a POSIX shell (sh)"
    return f"agent type {type_name!r}: executable {program!r} not found{where}; {fix}"


async def binary_version(cfg: ExecutorConfig) -> tuple[bool, str]:
    """``PROGRAM --version`` (first line, ``VERSION_TIMEOUT_S`` at most): (ran ok, text)."""
    program = find_program(cfg)
    if program is None:
        return False, f"{cfg.program!r} not found"
    env = {**os.environ, **cfg.env}
    try:
        proc = await run_process(
            [program, "--version"], env=env, timeout_s=VERSION_TIMEOUT_S, max_bytes=4096
        )
    except OSError as exc:
        return False, f"{program}: {exc}"
    out = (proc.stdout or proc.stderr).decode("utf-8", "replace").strip()
    first = out.splitlines()[0][:200] if out else ""
    if proc.stopped is not None:
        return False, f"{program} --version did not answer within {VERSION_TIMEOUT_S:g} s"
    if proc.returncode != 0:
        return False, f"{program} --version failed ({proc.exit_text()}): {first}"
    return True, f"{program}: {first}"
