# GENERATED from cfn_client/api/async_batch.py by `python -m cfn_client.api.generate`:
# do not edit by hand (a test fails when this file is stale).
"""The blocking client's batched submit (``Client`` inherits it)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from cfn_client.api.base import (
    RETRYABLE_SUBMIT_ERRORS,
    SUBMIT_RETRIES,
    new_idempotency_key,
    submit_pauses,
)
from cfn_client.api.sync_transport import SyncTransport
from cfn_client.wire.schema.swarm import TaskSpec, TaskSubmitManyResult

__all__ = ["BatchOps"]


class BatchOps(SyncTransport):
    """``task.submit_many``: many tasks in one request (see ``base.batch_chunks``)."""

    def task_submit_many(
        self,
        tasks: Iterable[TaskSpec | Mapping[str, Any]],
        *,
        swarm: str | None = None,
        retries: int = SUBMIT_RETRIES,
    ) -> TaskSubmitManyResult:
        """Queue 1..1000 tasks (``MAX_SUBMIT_MANY``) in one request; returns their ids
        in order. Each task is a ``TaskSpec`` or a mapping of its fields (``text``,
        ``type``, ``priority``, ``timeout_s``, ``max_attempts``, ``idempotency_key``).

        All or none: cfnd checks every task as ``task.submit`` would (type, pools, the
        exec right, size) before queuing any; a refused one fails the call with an
        error naming its index (``details['index']``), and nothing is queued. Texts go
        inline, so the request must fit one frame (``base.batch_chunks`` cuts a long
        list into fitting calls).

        Like ``task_submit``, every task without an ``idempotency_key`` gets a new one
        and the request is retried with the same keys when no answer came: a retried
        batch never queues a task twice.
        """
        specs = [
            msgspec.structs.replace(t, idempotency_key=t.idempotency_key or new_idempotency_key())
            if isinstance(t, TaskSpec)
            else {**t, "idempotency_key": t.get("idempotency_key") or new_idempotency_key()}
            for t in tasks
        ]
        for pause in submit_pauses(retries):
            try:
                return self._op("task.submit_many", TaskSubmitManyResult, swarm=swarm, tasks=specs)
            except RETRYABLE_SUBMIT_ERRORS:
                if pause is None:
                    raise
            self._pause(pause)
        raise AssertionError("unreachable: the last attempt returns or raises")
