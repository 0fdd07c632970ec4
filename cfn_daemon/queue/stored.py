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
from typing import Any

import msgspec

from cfn_client.wire.schema.swarm import TaskResult

_json = msgspec.json.Encoder()
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
