"""How a task's result is stored in its hash: compact, so that a small task's hash stays
a listpack (Redis keeps a hash compact only while every value is at most
``hash-max-listpack-value``, 64 bytes by default; one longer value makes all of it a
hashtable, about three times the memory).

Left out of the stored JSON: every field at its default, and for a success the agent,
which the task hash holds too (``agent``: a succeeded task never changes it again).
The duration is kept to the microsecond. Every reader goes through ``decode_result``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import msgspec

from cfn_client.wire.schema.swarm import TaskInfo, TaskResult

_json = msgspec.json.Encoder()
_OPTIONAL_STR = ("agent", "error", "target")
_decode = msgspec.json.Decoder()


@functools.cache
def _defaults() -> tuple[tuple[str, Any], ...]:
    return tuple(
        (f.name, f.default)
        for f in msgspec.structs.fields(TaskResult)
        if f.default is not msgspec.NODEFAULT
    )


def encode_result(result: TaskResult) -> bytes:
    """The stored form of ``result`` (see the module docstring)."""
    out = msgspec.structs.asdict(result)
    for name, default in _defaults():
        if out[name] == default and type(out[name]) is type(default):
            del out[name]
    if result.ok:
        # The attempt stays: a stored result names the attempt it is for, so an old
        # attempt's result put back after a retry is refused by name (core.seals).
        del out["agent"]
    if "duration_ms" in out:
        out["duration_ms"] = round(out["duration_ms"], 3)
    return _json.encode(out)


def decode_result(raw: bytes | str, *, agent: str = "", attempt: int = 0) -> TaskResult:
    """A stored result (compact or whole); ``agent`` / ``attempt``: the task hash's, for
    a compact success."""
    fields = _decode.decode(raw)
    fields.setdefault("agent", agent)
    fields.setdefault("attempt", attempt)
    return msgspec.convert(fields, TaskResult)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_SEAL = (b"seal", "seal")


def decode_task(raw: Mapping[Any, Any]) -> TaskInfo:
    """A task hash (bytes or str fields) → TaskInfo."""
    # The seal is raw signature bytes (core.seals.pack), not text; cfnloop.trusted reads it.
    fields = {_text(k): _text(v) for k, v in raw.items() if k not in _SEAL}
    result_json = fields.pop("result", "")
    context_json = fields.pop("context", "")
    record: dict[str, Any] = {
        k: v for k, v in fields.items() if k in TaskInfo.__struct_fields__ and k != "result"
    }
    if context_json:
        record["context"] = msgspec.json.decode(context_json)
    for key in _OPTIONAL_STR:
        if not record.get(key):
            record.pop(key, None)
    if not record.get("timeout_s"):
        record.pop("timeout_s", None)
    info = msgspec.convert(record, TaskInfo, strict=False)
    if result_json:
        info.result = decode_result(result_json, agent=info.agent or "", attempt=info.attempts)
    return info
