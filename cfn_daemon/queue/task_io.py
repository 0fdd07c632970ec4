"""Big task texts and outputs through a frame-capped socket.

- **Summaries** for lists: ``summaries.lua`` shortens texts and outputs inside
  Redis, so a page of tasks with megabyte outputs moves kilobytes.
- **Uploads**: a text larger than a frame is sent in chunks (``task.upload``) into
  a string key with a time to live, then submitted by its upload id.
- **Reads**: ``task.read`` returns a byte range of a task's text, output or stderr.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from cfn_client.wire.errors import InvalidArgs, NotFound
from cfn_client.wire.schema.swarm import TaskInfo
from cfn_daemon.core.task_views import OUTPUT_PREVIEW, TEXT_PREVIEW
from cfn_daemon.queue.stored import decode_result
from cfn_daemon.store.keys import Keys
from cfn_daemon.store.scripts import Scripts

#: An upload nobody finished is dropped this long after its last chunk.
UPLOAD_TTL_S = 3600
#: Task hashes per summaries.lua call: each call stays short.
SUMMARY_BATCH = 50
#: Big fields kept for ranged reads (each at most tasks.max_text_bytes or an agent
#: type's max_output_bytes).
READ_CACHE_ENTRIES = 4


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class TaskIO:
    """Summaries, uploads and ranged reads for one Redis and key prefix."""

    def __init__(self, redis: Any, keys: Keys, scripts: Scripts, decode: Any) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = scripts
        self._decode = decode  # stored.decode_task
        self._cache: OrderedDict[tuple[str, str, str], tuple[str, str]] = OrderedDict()

    async def summaries(
        self,
        swarm: str,
        task_ids: list[str],
        text_bytes: int = TEXT_PREVIEW,
        out_bytes: int = OUTPUT_PREVIEW,
    ) -> list[TaskInfo]:
        """The tasks (in order, missing ones left out), shortened in Redis."""
        out: list[TaskInfo] = []
        for i in range(0, len(task_ids), SUMMARY_BATCH):
            batch = task_ids[i : i + SUMMARY_BATCH]
            flats = await self.scripts.run(
                "summaries",
                [self.keys.task(swarm, t) for t in batch],
                [text_bytes, out_bytes],
            )
            for flat in flats:
                if flat:
                    raw: Mapping[Any, Any] = dict(zip(flat[::2], flat[1::2], strict=True))
                    out.append(self._decode(raw))
        return out

    async def upload(
        self, swarm: str, upload_id: str | None, data: str, max_bytes: int
    ) -> tuple[str, int]:
        """Append ``data`` to an upload (a new one when ``upload_id`` is None);
        returns its id and size so far."""
        new = upload_id is None
        uid = upload_id or f"u{uuid.uuid4().hex}"
        size = int(
            await self.scripts.run(
                "upload",
                [self.keys.upload(swarm, uid)],
                [data, 1 if new else 0, max_bytes, UPLOAD_TTL_S],
            )
        )
        if size == -1:
            raise NotFound(
                f"no upload {uid!r} in swarm {swarm}: unknown, already submitted, or expired "
                f"({UPLOAD_TTL_S} s after its last chunk); start a new one",
                details={"upload": uid},
            )
        if size == -2:
            raise InvalidArgs(
                f"task text over tasks.max_text_bytes ({max_bytes} bytes); the upload was dropped",
                details={"upload": uid, "max_text_bytes": max_bytes},
            )
        return uid, size

    async def take_upload(self, swarm: str, upload_id: str) -> str:
        raw = await self.redis.get(self.keys.upload(swarm, upload_id))
        if raw is None:
            raise NotFound(
                f"no upload {upload_id!r} in swarm {swarm}: unknown, already submitted, or "
                "expired; send the text again with task.upload",
                details={"upload": upload_id},
            )
        try:
            return bytes(raw).decode()
        except UnicodeDecodeError:  # chunks are str, so this is a foreign write
            raise InvalidArgs(f"upload {upload_id!r} is not UTF-8 text") from None

    async def drop_upload(self, swarm: str, upload_id: str) -> None:
        await self.redis.unlink(self.keys.upload(swarm, upload_id))

    async def field(self, swarm: str, task_id: str, name: str) -> str:
        """The whole text, output or stderr of a task.

        The last few values read are kept (checked against the task's ``updated_ms``),
        so reading a big field range by range costs one full read, not one per range."""
        key = self.keys.task(swarm, task_id)
        stamp = await self.redis.hmget(key, "updated_ms", "status")
        if stamp[1] is None:
            raise NotFound(
                f"no task {task_id!r} in swarm {swarm}; `cfnctl task list` shows the tasks",
                details={"task": task_id, "swarm": swarm},
            )
        token = (swarm, task_id, name)
        version = f"{_text(stamp[0] or '')}/{_text(stamp[1])}"
        cached = self._cache.get(token)
        if cached is not None and cached[0] == version:
            self._cache.move_to_end(token)
            return cached[1]
        if name == "text":
            value = _text(await self.redis.hget(key, "text") or b"")
        else:
            raw = await self.redis.hget(key, "result")
            result = decode_result(raw) if raw else None
            value = "" if result is None else (result.output if name == "output" else result.stderr)
        self._cache[token] = (version, value)
        while len(self._cache) > READ_CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return value
