"""The cfnd wire protocol: the envelope (requests, responses, events, errors), the
handshake, framing and decoding. The per-op schemas are in ``wire.schema``.

Two framings share one socket and are told apart by each frame's first byte:

* ``{`` starts a newline-delimited JSON frame (for ``socat`` and shell scripts);
* anything else is a 4-byte big-endian length followed by a msgpack body.

A reply uses the framing of the request it answers. See docs/PROTOCOL.md.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import msgspec

from cfn_client.wire.errors import CfnError, InvalidArgs, ProtocolError

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 1 << 20
# Requests nest at most this deep (the envelope counts as one level): deeper frames
# get ``invalid_frame``, never a RecursionError somewhere inside cfnd.
MAX_NESTING_DEPTH = 64
LENGTH_PREFIX = struct.Struct(">I")
JSON_START = ord("{")
# Blank lines between JSON frames are tolerated so `echo`/`socat` users need not care.
_SKIPPABLE = b" \t\r\n"
_KEEP_BUFFER_BYTES = 64 * 1024

Framing = Literal["json", "msgpack"]
RequestId = int | str | None


class Role(enum.IntEnum):
    """Caller roles, ordered: each role may do everything the lower ones may.

    ``none`` is a caller cfnd does not know: every op is refused to it."""

    none = 0
    viewer = 1
    operator = 2
    admin = 3


# --------------------------------------------------------------------------- envelopes


class Request(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One request: ``op`` is a dotted name, ``args`` is decoded by the op's schema."""

    id: int | str | None = None
    op: str
    args: dict[str, Any] = {}


class ErrorInfo(msgspec.Struct, kw_only=True):
    """The error part of a failed response."""

    code: str
    message: str
    details: dict[str, Any] = {}


class Response(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Reply to one request; a streaming op ends with one of these. ``id`` is always sent
    (null when the request had none or could not be read)."""

    id: int | str | None
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None


class EventFrame(msgspec.Struct, kw_only=True):
    """One event of a streaming op, sent before its final ``Response``."""

    id: int | str | None = None
    event: Any


# --------------------------------------------------------------------------- op schemas


class Args(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every op's arguments: unknown fields are rejected."""


class Result(msgspec.Struct, kw_only=True):
    """Base of every op's result."""


class HelloArgs(Args):
    protocol: int
    client: str = ""


class HelloResult(Result):
    protocol: int
    server_version: str
    pid: int
    uid: int
    user: str
    role: str
    # The daemon's frame cap (0: an older daemon that did not say): clients size
    # upload chunks and read ranges to fit.
    max_frame_bytes: int = 0


A = TypeVar("A", bound=Args)


def decode_args(args_type: type[A], raw: dict[str, Any]) -> A:
    """Strictly convert ``raw`` into ``args_type``; errors name the field and expected type.

    No string anywhere in the arguments may contain NUL (task text becomes argv and
    prompts, names become Redis keys and paths), and every float must be finite.
    """
    check_values(raw, "args")
    try:
        return msgspec.convert(raw, args_type, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidArgs(
            f"invalid arguments for {args_type.__name__}: {exc}",
            details={"reason": str(exc), "schema": schema_of(args_type)},
        ) from None


def check_values(value: Any, path: str) -> None:
    """Raise ``InvalidArgs`` naming the first string with NUL or non-finite float in
    ``value`` (dicts, lists, Structs; iterative, so any depth is safe)."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise InvalidArgs(
                    f"{where}: a NUL byte at character {item.index(chr(0))}; "
                    "expected text without NUL",
                    details={"field": where, "reason": "nul"},
                )
            if not item.isascii():
                _check_utf8(item, where)
        elif isinstance(item, bool):
            pass
        elif isinstance(item, int):
            if not _INT_MIN <= item <= _INT_MAX:
                raise InvalidArgs(
                    f"{where}: {item} is out of range; expected an integer in "
                    f"{_INT_MIN}..{_INT_MAX}",
                    details={"field": where, "reason": "out_of_range"},
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidArgs(
                    f"{where}: {item!r} is not a finite number; expected a finite number "
                    "(or null for no value)",
                    details={"field": where, "reason": "not_finite"},
                )
        elif isinstance(item, dict):
            for key, sub in item.items():
                name = f"{where}.{key}"
                if isinstance(key, str | float):
                    stack.append((key, f"{where} key {key!r}"))
                stack.append((sub, name))
        elif isinstance(item, list | tuple):
            stack.extend((sub, f"{where}[{i}]") for i, sub in enumerate(item))
        elif isinstance(item, msgspec.Struct):
            stack.extend((getattr(item, f), f"{where}.{f}") for f in item.__struct_fields__)


# What msgpack (and so every client and cfnd) can carry.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _check_utf8(text: str, where: str) -> None:
    # Lone surrogates: bytes that were not UTF-8 (argv decoded with surrogateescape, or a
    # JSON "\udcff" escape). They cannot be stored, logged or passed on.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgs(
            f"{where}: not valid UTF-8 text (character {exc.start}); expected UTF-8",
            details={"field": where, "reason": "not_utf8"},
        ) from None


def nesting_depth(value: Any, limit: int) -> int:
    """How deep ``value`` nests (a scalar is 0), counting no further than ``limit + 1``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if depth > limit:
            return depth
        stack.extend((child, depth) for child in children)
    return deepest


def _too_deep(framing: str) -> ProtocolError:
    return ProtocolError(
        f"{framing} frame is nested deeper than {MAX_NESTING_DEPTH} levels; "
        f"expected at most {MAX_NESTING_DEPTH}",
        details={"max_nesting_depth": MAX_NESTING_DEPTH},
    )


def schema_of(struct_type: type[msgspec.Struct]) -> dict[str, str]:
    """A short field → type description, sent back with ``invalid_args``."""
    info = msgspec.inspect.type_info(struct_type)
    assert isinstance(info, msgspec.inspect.StructType)
    return {f.encode_name: _type_name(f.type) for f in info.fields}


def _type_name(t: msgspec.inspect.Type) -> str:
    if isinstance(t, msgspec.inspect.UnionType):
        return " | ".join(_type_name(x) for x in t.types)
    name = type(t).__name__.removesuffix("Type").lower()
    return {"none": "null", "str": "string", "dict": "object", "list": "array"}.get(name, name)


# --------------------------------------------------------------------------- framing

_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()


def encode_frame(obj: Any, framing: Framing) -> bytes:
    """Encode one envelope in the given framing, ready to write to the socket."""
    if framing == "json":
        return _json_encoder.encode(obj) + b"\n"
    body = _msgpack_encoder.encode(obj)
    return LENGTH_PREFIX.pack(len(body)) + body


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete frame body, not yet decoded."""

    framing: Framing
    body: bytes


@dataclass(frozen=True, slots=True)
class FrameFault:
    """A framing error. ``fatal`` ones leave the stream unsynchronised: close after replying."""

    error: ProtocolError
    framing: Framing
    fatal: bool


class FrameDecoder:
    """Sans-I/O splitter: feed bytes, get whole frames (or faults) back.

    The same decoder serves the daemon, the sync and the async client, so all
    three agree on framing edge cases.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._broken = False

    def feed(self, data: bytes) -> list[Frame | FrameFault]:
        """Append ``data`` and return every frame it completes."""
        if self._broken:
            return []
        self._buf += data
        out: list[Frame | FrameFault] = []
        pos = 0
        buf = self._buf
        n = len(buf)
        while pos < n:
            first = buf[pos]
            if first in _SKIPPABLE:
                pos += 1
                continue
            if first == JSON_START:
                end = buf.find(b"\n", pos, pos + self.max_frame_bytes + 1)
                if end < 0:
                    if n - pos > self.max_frame_bytes:
                        out.append(self._too_large("json", n - pos))
                        return out
                    break
                out.append(Frame("json", bytes(buf[pos:end]).rstrip(b"\r")))
                pos = end + 1
                continue
            if n - pos < LENGTH_PREFIX.size:
                break
            (length,) = LENGTH_PREFIX.unpack_from(buf, pos)
            if length > self.max_frame_bytes:
                out.append(self._too_large("msgpack", length))
                return out
            if n - pos - LENGTH_PREFIX.size < length:
                break
            start = pos + LENGTH_PREFIX.size
            if length == 0:
                out.append(
                    FrameFault(
                        ProtocolError("empty msgpack frame (length prefix 0)"), "msgpack", False
                    )
                )
            else:
                out.append(Frame("msgpack", bytes(buf[start : start + length])))
            pos = start + length
        del buf[:pos]
        if not buf and pos > _KEEP_BUFFER_BYTES:
            self._buf = bytearray()  # give a big frame's buffer back, not just empty it
        return out

    @property
    def buffered(self) -> int:
        """Bytes of a frame begun but not complete."""
        return len(self._buf)

    def partial(self) -> tuple[Framing, int]:
        """The framing of the frame begun and how many of its bytes are here."""
        rest = self._buf.lstrip(_SKIPPABLE)
        return ("json" if rest[:1] == b"{" else "msgpack"), len(rest)

    def eof(self) -> FrameFault | None:
        """Call when the peer closed; reports a frame cut short, if any."""
        if self._broken:
            return None
        rest = bytes(self._buf).lstrip(_SKIPPABLE)
        if not rest:
            return None
        if rest[0] == JSON_START:
            msg = f"connection closed inside a JSON frame after {len(rest)} bytes without a newline"
            framing: Framing = "json"
        elif len(rest) < LENGTH_PREFIX.size:
            msg = f"connection closed inside a length prefix ({len(rest)} of 4 bytes)"
            framing = "msgpack"
        else:
            (length,) = LENGTH_PREFIX.unpack_from(rest)
            got = len(rest) - LENGTH_PREFIX.size
            msg = f"connection closed after {got} of {length} msgpack body bytes"
            framing = "msgpack"
        return FrameFault(ProtocolError(msg, code="truncated_frame"), framing, True)

    def _too_large(self, framing: Framing, size: int) -> FrameFault:
        self._broken = True
        self._buf.clear()
        what = "declares" if framing == "msgpack" else "exceeds"
        return FrameFault(
            ProtocolError(
                f"{framing} frame {what} {size} bytes; the limit is {self.max_frame_bytes}",
                code="frame_too_large",
                details={"size": size, "max_frame_bytes": self.max_frame_bytes},
            ),
            framing,
            True,
        )


def decode_body(frame: Frame) -> Any:
    """Decode a frame body to plain Python objects; raises ``invalid_frame``."""
    if frame.framing == "json":
        try:
            frame.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(
                f"JSON frame is not valid UTF-8 (byte {exc.start}: {exc.reason})",
                details={"byte_offset": exc.start},
            ) from None
        try:
            return msgspec.json.decode(frame.body)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"JSON frame does not parse: {exc}") from None
        except RecursionError:
            raise _too_deep("JSON") from None
    try:
        return msgspec.msgpack.decode(frame.body)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"msgpack frame does not parse: {exc}") from None
    except RecursionError:
        raise _too_deep("msgpack") from None


def parse_request(obj: Any, framing: Framing = "json") -> Request:
    """Validate a decoded frame as a request envelope; raises ``invalid_request``
    (``invalid_frame`` when it nests deeper than ``MAX_NESTING_DEPTH``)."""
    if not isinstance(obj, dict):
        raise ProtocolError(
            f"a request must be an object with 'op', got {type(obj).__name__}",
            code="invalid_request",
        )
    if nesting_depth(obj, MAX_NESTING_DEPTH) > MAX_NESTING_DEPTH:
        raise _too_deep("JSON" if framing == "json" else "msgpack")
    try:
        return msgspec.convert(obj, Request, strict=True)
    except msgspec.ValidationError as exc:
        raise ProtocolError(
            f"invalid request envelope: {exc}; expected {{id, op, args}}",
            code="invalid_request",
        ) from None


def request_id_of(obj: Any) -> RequestId:
    """Best-effort id of a (possibly malformed) request, so the error can be correlated."""
    if isinstance(obj, dict):
        rid = obj.get("id")
        if isinstance(rid, int | str) and not isinstance(rid, bool):
            return rid
    return None


def error_response(rid: RequestId, err: CfnError) -> Response:
    """The ``ok: false`` reply for ``err``."""
    return Response(
        id=rid,
        ok=False,
        error=ErrorInfo(code=err.instance_code, message=err.message, details=err.details),
    )


def raise_for_error(resp: Response) -> None:
    """Client side: turn an ``ok: false`` reply into the matching ``CfnError``."""
    if not resp.ok:
        info = resp.error or ErrorInfo(code="internal_error", message="error without details")
        raise CfnError.from_wire(info.code, info.message, info.details)


def decode_response(obj: Any) -> Response | EventFrame:
    """Client side: classify a decoded frame as a final response or a stream event."""
    if isinstance(obj, dict) and "event" in obj and "ok" not in obj:
        return msgspec.convert(obj, EventFrame)
    return msgspec.convert(obj, Response)
