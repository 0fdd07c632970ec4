"""``cfnctl run``, ``cfnctl task`` and ``cfnctl dlq``: queue tasks, wait for them, manage them."""

from __future__ import annotations

from typing import NoReturn, TextIO

import click

from cfn_client.api.sync import Client
from cfn_client.cli import completion as complete
from cfn_client.cli import render
from cfn_client.cli.commands.batch import read_batch, submit_batch
from cfn_client.cli.env import CliEnv, Duration, choice_of, confirm_or_require_yes, pass_env
from cfn_client.wire.errors import EXIT_ERROR, EXIT_OK
from cfn_client.wire.schema.swarm import (
    MAX_SUBMIT_MANY,
    TERMINAL_TASK_STATUSES,
    Priority,
    TaskField,
    TaskInfo,
    TaskListResult,
    TaskSpec,
    TaskStatus,
)

WAIT_TIMEOUT_HELP = "Stop waiting after this long (e.g. 30, 5m) and exit 1; the task keeps running."


@click.command()
@click.argument("text", metavar='"TASK"', required=False)
@click.option(
    "-f", "--file", "text_file", type=click.File("r", encoding="utf-8"),
    help="Read the task text from FILE ('-': stdin), of any size up to tasks.max_text_bytes.",
)  # fmt: skip
@click.option(
    "--batch", "batch_file", type=click.File("r", encoding="utf-8"), metavar="FILE",
    help="Queue many tasks from FILE ('-': stdin), JSON Lines: one "
    '{"text": ..., "type": ..., "priority": ...} per line; --type, --priority, '
    "--task-timeout and --max-attempts fill in what a line leaves out. Every line is "
    "checked before any task is sent; prints the ids.",
)  # fmt: skip
@click.option(
    "--chunk", type=click.IntRange(1, MAX_SUBMIT_MANY), default=MAX_SUBMIT_MANY,
    show_default=True, metavar="N", help="--batch: send at most N tasks per request.",
)  # fmt: skip
@click.option(
    "--type", "task_type", default=None, metavar="TYPE",
    help="Agent type [default: cfnd's swarm.default_type, e.g. coder]; --type shell "
    "runs TASK as a shell command.",
)  # fmt: skip
@click.option("--priority", type=choice_of(Priority), default="normal", show_default=True)
@click.option("--wait", is_flag=True, help="Wait for the result, print its output, exit by it.")
@click.option("--timeout", "wait_s", type=Duration(), metavar="S", help=WAIT_TIMEOUT_HELP)
@click.option(
    "--task-timeout",
    type=Duration(),
    metavar="S",
    help="Limit each attempt's run time [default: cfnd's].",
)
@click.option(
    "--max-attempts", type=click.IntRange(min=1), metavar="N",
    help="Try at most N times [default: cfnd's].",
)  # fmt: skip
@click.option(
    "--idempotency-key", metavar="KEY",
    help="Name this submit: repeating it with the same KEY (a script's retry) returns "
    "the first task instead of queuing another [default: a new key per call].",
)  # fmt: skip
@pass_env
def run(
    env: CliEnv, text: str | None, text_file: TextIO | None, batch_file: TextIO | None,
    chunk: int, task_type: str | None, priority: Priority,
    wait: bool, wait_s: float | None, task_timeout: float | None, max_attempts: int | None,
    idempotency_key: str | None,
) -> None:  # fmt: skip
    """Queue TASK (or the text of --file) on the current swarm and print its id.

    With --wait, block until it finishes, print its output and exit 0 if it
    succeeded, 1 otherwise (its error and the tail of its stderr go to stderr).
    A text larger than one frame is sent in chunks; outputs of any size are read
    back in ranges.

    With --batch FILE, queue every task of FILE and print their ids, one per
    line; a bad line is an error naming it, and then nothing is queued. With
    --wait, print how each task ended (as `task wait`) and exit 0 only if all
    succeeded.
    """
    if wait_s is not None and not wait:
        raise click.UsageError("--timeout is how long --wait waits; add --wait")
    if batch_file is not None:
        if text is not None or text_file is not None or idempotency_key is not None:
            raise click.UsageError(
                '--batch takes its tasks from FILE: give no "TASK", --file or '
                "--idempotency-key (set idempotency_key per line instead)"
            )
        options = {"type": task_type, "priority": priority, "timeout_s": task_timeout,
                   "max_attempts": max_attempts}  # fmt: skip
        # No --type: a line without one goes to cfnd's default type, as `run "TASK"`.
        defaults = {k: v for k, v in options.items() if v is not None or k == "type"}
        _run_batch(env, *read_batch(batch_file, defaults), chunk, wait, wait_s)
    if (text is None) == (text_file is None):
        raise click.UsageError('give the task as "TASK" or with --file (one of them)')
    if text_file is not None:
        try:
            text = text_file.read()
        except UnicodeDecodeError as exc:
            raise click.UsageError(f"--file: not UTF-8 text ({exc.reason})") from None
    assert text is not None

    def submit(c: Client) -> TaskInfo:
        task = c.task_submit(
            text, swarm=env.swarm, type=task_type, priority=priority,
            timeout_s=task_timeout, max_attempts=max_attempts, idempotency_key=idempotency_key,
        )  # fmt: skip
        if not wait:
            return task
        done = c.task_wait([task.id], timeout_s=wait_s, swarm=task.swarm).tasks
        # The wait's reply holds a summary; the output is printed whole.
        return c.task_full(next((t for t in done if t.id == task.id), task))

    task = env.call(submit)
    if not wait:
        env.emit(task, lambda: task.id)
        return
    if env.json:
        click.echo(render.to_json(task))
    elif task.result is not None and task.result.output:
        click.echo(task.result.output, nl=not task.result.output.endswith("\n"))
    env.exit(_outcome(env, [task], wait_s, tails=True))


def _run_batch(
    env: CliEnv, specs: list[TaskSpec], numbers: list[int], chunk: int, wait: bool,
    wait_s: float | None,
) -> NoReturn:  # fmt: skip
    result, tasks, counts, omitted = submit_batch(env, specs, numbers, chunk, wait, wait_s)
    if tasks is None:
        env.emit(result, lambda: "\n".join(result.ids))
        env.exit(EXIT_OK)
    done = TaskListResult(tasks=tasks, counts=counts, omitted=omitted)
    env.emit(done, lambda: render.wait_outcomes(tasks, counts, omitted))
    if omitted:
        env.exit(EXIT_OK if counts.get("succeeded", 0) == len(result.ids) else EXIT_ERROR)
    env.exit(_outcome(env, tasks, wait_s, tails=True))


def _outcome(env: CliEnv, tasks: list[TaskInfo], wait_s: float | None, tails: bool) -> int:
    """Exit status of a wait (like pueue's): 0 only if every task succeeded.

    Says on stderr which tasks are still unfinished and, with ``tails``, why each
    failed task failed (the end of its stderr).
    """
    unfinished = [t for t in tasks if t.status not in TERMINAL_TASK_STATUSES]
    if unfinished:
        ids = ", ".join(t.id for t in unfinished)
        env.warn(
            f"stopped waiting after {wait_s:g}s; still unfinished (they keep running): {ids}"
            if wait_s is not None
            else f"cfnd ended the wait with unfinished task(s): {ids}"
        )
    failed = [t for t in tasks if t.status in TERMINAL_TASK_STATUSES and t.status != "succeeded"]
    if tails and not env.json:
        for t in failed:
            click.echo(render.stderr_tail(t), err=True)
            if t.result is not None and t.result.truncated:
                env.warn(f"task {t.id}: output was truncated by cfnd")
    return EXIT_OK if not unfinished and not failed else EXIT_ERROR


@click.group()
def task() -> None:
    """List, inspect, cancel, wait for, retry and clean up tasks (queue them with `run`)."""


@task.command("list")
@click.option("--status", type=choice_of(TaskStatus), help="Only tasks in this state.")
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=100, show_default=True)
@click.option("--cursor", metavar="CURSOR", help="Continue after a previous page.")
@pass_env
def list_(env: CliEnv, status: str | None, limit: int, cursor: str | None) -> None:
    """List the swarm's tasks, newest first, a page at a time."""
    result = env.call(lambda c: c.task_list(env.swarm, status=status, limit=limit, cursor=cursor))
    env.emit(result, lambda: render.tasks_table(result.tasks))
    if result.next_cursor and not env.json:
        env.warn(f"more tasks: add --cursor {result.next_cursor}")


@task.command("status")
@click.argument("task_id", metavar="ID", shell_complete=complete.task_ids)
@pass_env
def status(env: CliEnv, task_id: str) -> None:
    """Show a task and its result: ok, exit code, output, error, agent, attempts, duration."""
    result = env.call(lambda c: c.task_full(c.task_status(task_id, env.swarm)))
    env.emit(result, lambda: render.task_info(result))


@task.command("output")
@click.argument("task_id", metavar="ID", shell_complete=complete.task_ids)
@click.option("--stderr", "field", flag_value="stderr", help="Its stderr instead.")
@click.option("--text", "field", flag_value="text", help="Its task text instead.")
@pass_env
def output(env: CliEnv, task_id: str, field: TaskField | None) -> None:
    """Print a task's whole output (or stderr, or text), read in ranges of any size."""

    def stream(c: Client) -> None:
        offset = 0
        while True:
            got = c.task_read(task_id, field or "output", offset=offset, swarm=env.swarm)
            click.echo(got.data, nl=False)
            if got.eof or got.next_offset <= offset:
                return
            offset = got.next_offset

    env.call(stream)


@task.command("cancel")
@click.argument("task_id", metavar="ID", shell_complete=complete.task_ids)
@pass_env
def cancel(env: CliEnv, task_id: str) -> None:
    """Cancel a queued or running task."""
    result = env.call(lambda c: c.task_cancel(task_id, env.swarm))
    env.emit(result, lambda: render.task_change(result, "cancelled"))


@task.command("retry")
@click.argument("task_id", metavar="ID", shell_complete=complete.task_ids)
@pass_env
def retry(env: CliEnv, task_id: str) -> None:
    """Queue a finished task again."""
    result = env.call(lambda c: c.task_retry(task_id, env.swarm))
    env.emit(result, lambda: render.task_change(result, "queued again"))


@task.command("wait")
@click.argument("task_ids", metavar="ID...", nargs=-1, shell_complete=complete.task_ids)
@click.option(
    "--all", "all_", is_flag=True,
    help="Wait until the swarm has no unfinished task (ones queued meanwhile too); "
    "reports only the tasks that finished during the wait.",
)  # fmt: skip
@click.option("--timeout", "wait_s", type=Duration(), metavar="S", help=WAIT_TIMEOUT_HELP)
@pass_env
def wait(env: CliEnv, task_ids: tuple[str, ...], all_: bool, wait_s: float | None) -> None:
    """Wait for tasks ID... (or --all) to finish; print how each ended.

    Exits 0 only if every task succeeded, 1 if any failed, was cancelled or
    died, or the timeout passed first. With --all, tasks that had finished
    before the wait are not counted (name their IDs to check them).
    """
    if bool(task_ids) == all_:
        raise click.UsageError("give task IDs or --all (not both)")
    result = env.call(lambda c: c.task_wait(task_ids, all=all_, timeout_s=wait_s, swarm=env.swarm))
    env.emit(result, lambda: render.wait_outcomes(result.tasks, result.counts, result.omitted))
    if result.omitted:  # counts cover every task, the list only what fit in one reply
        bad = sum(n for s, n in result.counts.items() if s != "succeeded")
        env.exit(EXIT_OK if not bad else EXIT_ERROR)
    env.exit(_outcome(env, result.tasks, wait_s, tails=False))


@task.command("clean")
@click.option(
    "--older-than", "older_than", type=Duration(), default=0.0, metavar="SECONDS",
    help="Only tasks finished at least this long ago (e.g. 3600, 1h).",
)  # fmt: skip
@pass_env
def clean(env: CliEnv, older_than: float) -> None:
    """Delete finished tasks (succeeded, failed, cancelled)."""
    result = env.call(lambda c: c.task_clean(env.swarm, older_than_s=older_than))
    env.emit(result, lambda: render.count(result, "removed {n} finished task(s)"))


@click.group()
def dlq() -> None:
    """The dead-letter queue: tasks that ran out of attempts."""


@dlq.command("list")
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=100, show_default=True)
@pass_env
def dlq_list(env: CliEnv, limit: int) -> None:
    """List dead tasks with their last error."""
    result = env.call(lambda c: c.dlq_list(env.swarm, limit=limit))
    env.emit(
        result,
        lambda: render.tasks_table(result.tasks, errors=True, empty="no dead tasks"),
    )


@dlq.command("requeue")
@click.argument("task_id", metavar="[ID]", required=False, shell_complete=complete.task_ids)
@click.option("-y", "--yes", is_flag=True, help="Requeue all without asking.")
@pass_env
def requeue(env: CliEnv, task_id: str | None, yes: bool) -> None:
    """Queue dead task ID again, or every dead task (asks first unless --yes)."""
    if task_id is None:
        confirm_or_require_yes(
            env,
            yes,
            "Requeue every dead task?",
            "requeueing every dead task needs --yes (or an ID)",
        )
    result = env.call(lambda c: c.dlq_requeue(task_id, env.swarm))
    env.emit(result, lambda: render.count(result, "requeued {n} task(s)"))
