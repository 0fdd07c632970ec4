"""Human output for tasks, waits and the dead-letter queue."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cfn_client.cli.render.common import (
    STDERR_TAIL_LINES,
    fields,
    format_age,
    format_run_time,
    format_time,
    now_ms,
    shorten,
    table,
)
from cfn_client.wire.schema.swarm import (
    TERMINAL_TASK_STATUSES,
    CountResult,
    TaskInfo,
)

# --------------------------------------------------------------------------- tasks


def tasks_table(tasks: Sequence[TaskInfo], errors: bool = False, empty: str = "no tasks") -> str:
    """Tasks, one per row; ``errors`` adds each task's last error."""
    if not tasks:
        return empty
    now = now_ms()
    headers = ["ID", "STATUS", "PRIORITY", "TYPE", "AGENT", "ATTEMPTS", "AGE", "TEXT"]
    if errors:
        headers.append("ERROR")
    rows = []
    for t in tasks:
        row = [
            t.id, t.status, t.priority, t.type, t.agent or "-", f"{t.attempts}/{t.max_attempts}",
            format_age(t.created_ms, now), shorten(t.text, 40),
        ]  # fmt: skip
        if errors:
            row.append(shorten(task_error(t) or "-"))
        rows.append(row)
    return table(headers, rows)


def task_error(task: TaskInfo) -> str | None:
    """The most telling error of a task: its result's, else its own."""
    if task.result is not None and task.result.error:
        return task.result.error
    return task.error


def task_info(task: TaskInfo) -> str:
    """``cfnctl task status``: the task, its result, then its output and stderr."""
    pairs: list[tuple[str, Any]] = [
        ("task", task.id),
        ("swarm", task.swarm),
        ("status", task.status),
        ("text", task.text),
        ("type", task.type),
        ("priority", task.priority),
        ("attempts", f"{task.attempts}/{task.max_attempts}"),
        ("agent", task.agent or "-"),
        ("created", format_time(task.created_ms)),
        ("updated", format_time(task.updated_ms)),
        ("timeout", "-" if task.timeout_s is None else f"{task.timeout_s:g}s"),
    ]
    if task.error:
        pairs.append(("error", task.error))
    res = task.result
    blocks: list[str] = []
    if res is not None:
        pairs += [
            ("result", "ok" if res.ok else "FAILED"),
            ("  exit code", "-" if res.exit_code is None else res.exit_code),
            ("  agent", res.agent),
            ("  attempt", res.attempt),
            ("  duration", format_run_time(res.duration_ms)),
        ]
        if res.error and res.error != task.error:
            pairs.append(("  error", res.error))
        if res.confidence is not None:
            pairs.append(("  confidence", res.confidence))
        if res.vote is not None:
            pairs.append(("  vote", res.vote))
        if res.feedback is not None:
            pairs.append(("  feedback", res.feedback))
        trunc = " (truncated)" if res.truncated else ""
        for label, text in (("output", res.output), ("stderr", res.stderr)):
            if text:
                blocks.append(f"{label}{trunc}:\n" + indent(text))
    return "\n\n".join([fields(pairs), *blocks])


def indent(text: str, prefix: str = "  ") -> str:
    """Every line of ``text`` indented (no trailing newline)."""
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())


def task_change(task: TaskInfo, action: str) -> str:
    """One line after cancel/retry: ``task t1 cancelled; now cancelled``."""
    return f"task {task.id} {action}; now {task.status}"


def wait_outcomes(
    tasks: Sequence[TaskInfo], counts: Mapping[str, int] | None = None, omitted: int = 0
) -> str:
    """``cfnctl task wait``: one row per waited task, then a summary. With ``omitted``
    (more tasks than one reply holds), the summary comes from ``counts``."""
    if not tasks and not counts:
        return "no tasks to wait for"
    if omitted and counts:
        total = sum(counts.values())
        rows = _outcome_rows(tasks)
        shown = table(["ID", "STATUS", "EXIT", "AGENT", "DURATION", "ERROR"], rows) + "\n\n"
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        return (shown if rows else "") + (
            f"{counts.get('succeeded', 0)} of {total} succeeded ({parts}; {omitted} not listed)"
        )
    rows = _outcome_rows(tasks)
    ok = sum(t.status == "succeeded" for t in tasks)
    unfinished = sum(t.status not in TERMINAL_TASK_STATUSES for t in tasks)
    summary = f"{ok} of {len(tasks)} succeeded"
    if unfinished:
        summary += f", {unfinished} still unfinished"
    return table(["ID", "STATUS", "EXIT", "AGENT", "DURATION", "ERROR"], rows) + "\n\n" + summary


def _outcome_rows(tasks: Sequence[TaskInfo]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for t in tasks:
        res = t.result
        exit_code = "-" if res is None or res.exit_code is None else res.exit_code
        duration = "-" if res is None else format_run_time(res.duration_ms)
        rows.append([t.id, t.status, exit_code, t.agent or "-", duration,
                     shorten(task_error(t) or "", 40) or "-"])  # fmt: skip
    return rows


def stderr_tail(task: TaskInfo, lines: int = STDERR_TAIL_LINES) -> str:
    """What ``run --wait`` prints on stderr for a task that did not succeed."""
    head = f"task {task.id} {task.status}"
    res = task.result
    if res is not None and res.exit_code is not None:
        head += f" (exit code {res.exit_code})"
    err = task_error(task)
    out = [head + (f": {err}" if err else "")]
    if res is not None and res.stderr:
        tail = res.stderr.rstrip("\n").splitlines()[-lines:]
        out.append("\n".join(tail))
    return "\n".join(out)


def count(result: CountResult, what: str) -> str:
    """``removed 3 finished task(s)``-style lines."""
    return what.format(n=result.count)
