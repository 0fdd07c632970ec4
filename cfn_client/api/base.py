"""What both clients share: argument checking, result decoding, wait timeouts."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from cfn_client.conn.base import DEFAULT_TIMEOUT_S
from cfn_client.wire.errors import (
    DaemonUnreachable,
    ProtocolError,
    RequestTimeout,
    StoreUnavailable,
)
from cfn_client.wire.ops import OPS
from cfn_client.wire.paths import default_socket_path
from cfn_client.wire.protocol import DEFAULT_MAX_FRAME_BYTES, Args, Result, decode_args
from cfn_client.wire.schema.swarm import MAX_SUBMIT_MANY, TaskSpec

R = TypeVar("R", bound=Result)

__all__ = [
    "RETRYABLE_SUBMIT_ERRORS",
    "SUBMIT_RETRIES",
    "ClientBase",
    "batch_chunks",
    "build_args",
    "chunk_bytes",
    "decode_result",
    "events_args",
    "loop_start_args",
    "new_idempotency_key",
    "new_task_id",
    "submit_pauses",
    "utf8_chunks",
    "wait_request_timeout",
]

WAIT_MARGIN_S = 5.0
#: Task texts up to this size go inline in ``task.submit``; larger ones are uploaded
#: in chunks of this size (smaller if the daemon's frame cap asks for it).
TEXT_CHUNK_BYTES = 256 * 1024


def chunk_bytes(max_frame_bytes: int) -> int:
    """Chunk size for uploads and reads under a daemon's frame cap (0: unknown)."""
    if max_frame_bytes <= 0:
        return TEXT_CHUNK_BYTES
    # JSON may escape a byte as six (\u00XX); keep room for the envelope too.
    return max(1024, min(TEXT_CHUNK_BYTES, max_frame_bytes // 8))


def utf8_chunks(text: str, max_bytes: int) -> list[str]:
    """``text`` cut into pieces of at most ``max_bytes`` UTF-8 bytes (whole characters)."""
    data = text.encode()
    out: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + max(max_bytes, 4), len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:
            end -= 1
        out.append(data[start:end].decode())
        start = end
    return out


def batch_chunks(
    specs: Iterable[TaskSpec], max_frame_bytes: int, max_tasks: int = MAX_SUBMIT_MANY
) -> Iterator[list[TaskSpec]]:
    """``specs`` in order, cut into ``task.submit_many`` calls of at most ``max_tasks``
    tasks whose JSON fits half a frame (``max_frame_bytes`` 0: unknown, the default
    cap). A single task too large for that is a chunk of its own (cfnd refuses it:
    submit it with ``task_submit``, which uploads big texts)."""
    budget = (max_frame_bytes or DEFAULT_MAX_FRAME_BYTES) // 2
    chunk: list[TaskSpec] = []
    used = 0
    for spec in specs:
        size = len(msgspec.json.encode(spec)) + 1
        if chunk and (len(chunk) >= max_tasks or used + size > budget):
            yield chunk
            chunk, used = [], 0
        chunk.append(spec)
        used += size
    if chunk:
        yield chunk


# A submit whose answer did not come is sent again (same idempotency key) this often.
SUBMIT_RETRIES = 3
SUBMIT_PAUSE_S, SUBMIT_PAUSE_MAX_S = 0.2, 2.0
# No answer (or the store was down): the submit may or may not have been recorded.
RETRYABLE_SUBMIT_ERRORS = (RequestTimeout, DaemonUnreachable, StoreUnavailable)


def new_idempotency_key() -> str:
    """A key for one logical submit (its retries reuse it)."""
    return f"c-{uuid.uuid4().hex}"


def new_task_id() -> str:
    """The id of a task this client submits (its retries reuse it): as cfnd makes them,
    millisecond time and a random suffix, so ids still sort by submit time."""
    return f"t{int(time.time() * 1000):x}{uuid.uuid4().hex[:8]}"


def submit_pauses(retries: int) -> Iterator[float | None]:
    """Pause before each retry (doubling, capped); None for the last attempt."""
    pause = SUBMIT_PAUSE_S
    for _ in range(max(0, retries)):
        yield pause
        pause = min(pause * 2, SUBMIT_PAUSE_MAX_S)
    yield None


def build_args(op: str, args: Mapping[str, Any]) -> Args | dict[str, Any]:
    """Validate ``args`` against a known op's schema; unknown ops pass through unchanged."""
    spec = OPS.get(op)
    if spec is None:
        return dict(args)
    return decode_args(spec.args, dict(args))


def decode_result(op: str, raw: Any, result_type: type[R] | None = None) -> Any:
    """Convert a raw result into the op's Result Struct (raw for ops this client doesn't know)."""
    target: type[Result] | None = result_type or (OPS[op].result if op in OPS else None)
    if target is None:
        return raw
    try:
        return msgspec.convert(raw, target)
    except msgspec.ValidationError as exc:
        raise ProtocolError(
            f"cfnd answered {op!r} with a result this client cannot read ({exc}); "
            "is cfnctl older than the daemon?",
            details={"op": op},
        ) from None


def wait_request_timeout(wait_s: float | None, reply_timeout_s: float) -> float:
    """How long to wait for the reply to a request that itself waits ``wait_s`` (None: no limit)."""
    if wait_s is None:
        return math.inf
    return wait_s + max(reply_timeout_s, WAIT_MARGIN_S)


def loop_start_args(
    task: str,
    swarm: str | None,
    phase: str | None,
    implementers: Iterable[str] | None,
    validators: Iterable[str] | None,
    owner: str | None,
    max_loop2: int | None,
    max_loop3: int | None,
    complexity: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """``loop.start`` arguments; ``options`` left as None (or empty) take cfnd's defaults."""
    args: dict[str, Any] = {
        "swarm": swarm, "task": task, "phase": phase, "owner": owner,
        "max_loop2": max_loop2, "max_loop3": max_loop3, "complexity": complexity,
    }  # fmt: skip
    # None: leave the field out, so the schema's default team applies.
    if implementers is not None:
        args["implementers"] = list(implementers)
    if validators is not None:
        args["validators"] = list(validators)
    for name, value in options.items():
        if value is not None and value != [] and value is not False:
            args[name] = list(value) if isinstance(value, tuple) else value
    return args


def events_args(
    swarm: str | None, since_ms: int | None, types: Iterable[str], limit: int
) -> dict[str, Any]:
    return {"swarm": swarm, "since_ms": since_ms, "types": list(types), "limit": limit}


class ClientBase:
    """Where the daemon is and how long to wait for it."""

    def __init__(
        self, socket_path: str | Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.socket_path = Path(socket_path) if socket_path is not None else default_socket_path()
        self.timeout_s = timeout_s
