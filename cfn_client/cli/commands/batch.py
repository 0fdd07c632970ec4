"""``cfnctl run --batch FILE``: many tasks from JSON Lines, queued with ``task.submit_many``.

Every line is read and checked before anything is sent; then the tasks go in chunks
(at most ``--chunk`` tasks and half a frame each), each chunk all or none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TextIO

import click
import msgspec

from cfn_client.api.base import batch_chunks
from cfn_client.api.sync import Client
from cfn_client.cli.env import CliEnv
from cfn_client.wire.errors import CfnError
from cfn_client.wire.protocol import check_values
from cfn_client.wire.schema.swarm import TaskInfo, TaskSpec, TaskSubmitManyResult

__all__ = ["read_batch", "submit_batch"]

LINE_SHAPE = (
    'one task per line, {"text": "...", "type": "shell", "priority": "normal"} '
    "(also timeout_s, max_attempts, idempotency_key; only text is required)"
)


def _bad(where: str, why: str) -> click.UsageError:
    return click.UsageError(f"--batch {where}: {why}; expected {LINE_SHAPE}; nothing was submitted")


def read_batch(stream: TextIO, defaults: Mapping[str, Any]) -> tuple[list[TaskSpec], list[int]]:
    """The tasks of a JSON Lines stream and the line number of each (blank lines are
    skipped); a field a line leaves out takes ``defaults`` (the run options given)."""
    specs: list[TaskSpec] = []
    numbers: list[int] = []
    try:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                doc = msgspec.json.decode(line)
            except msgspec.DecodeError as exc:
                raise _bad(where, f"not JSON ({exc})") from None
            if not isinstance(doc, dict):
                raise _bad(
                    where, f"expected a JSON object, got {type(doc).__name__} {line.strip()[:40]}"
                )
            try:
                check_values(doc, where)
                specs.append(msgspec.convert({**defaults, **doc}, TaskSpec, strict=True))
            except (msgspec.ValidationError, CfnError) as exc:
                raise _bad(where, str(exc)) from None
            numbers.append(number)
    except UnicodeDecodeError as exc:
        raise click.UsageError(f"--batch: not UTF-8 text ({exc.reason})") from None
    if not specs:
        raise click.UsageError(f"--batch: no tasks in the file; expected {LINE_SHAPE}")
    return specs, numbers


def submit_batch(
    env: CliEnv, specs: list[TaskSpec], numbers: list[int], chunk: int,
    wait: bool, wait_s: float | None,
) -> tuple[TaskSubmitManyResult, list[TaskInfo] | None, dict[str, int], int]:  # fmt: skip
    """Queue ``specs`` in chunks; with ``wait``, wait for all of them. Returns the ids,
    the finished tasks (None without ``wait``), their counts and how many were omitted."""

    def go(c: Client) -> tuple[TaskSubmitManyResult, list[TaskInfo] | None, dict[str, int], int]:
        chunks = list(batch_chunks(specs, c.hello().max_frame_bytes, chunk))
        ids: list[str] = []
        swarm = env.swarm or ""
        for part in chunks:
            try:
                got = c.task_submit_many(part, swarm=env.swarm)
            except CfnError as err:
                _locate(err, numbers, len(ids))
                if ids:
                    click.echo("\n".join(ids))
                    env.warn(f"{len(ids)} task(s) of earlier chunks were queued (ids above)")
                raise
            ids += got.ids
            swarm = got.swarm
        result = TaskSubmitManyResult(swarm=swarm, ids=ids)
        if not wait:
            return result, None, {}, 0
        done = c.task_wait(ids, timeout_s=wait_s, swarm=swarm)
        return result, list(done.tasks), done.counts, done.omitted

    return env.call(go)


def _locate(err: CfnError, numbers: list[int], offset: int) -> None:
    """A refused task named by its input line too (cfnd names its index in the chunk)."""
    index = err.details.get("index")
    if isinstance(index, int) and 0 <= offset + index < len(numbers):
        line = numbers[offset + index]
        err.message = f"--batch line {line}: {err.message}"
        err.args = (err.message,)
        err.details["line"] = line
