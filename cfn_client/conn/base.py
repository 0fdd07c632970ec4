"""What both cfnd connections share: framing helpers, errors, ids and the handshake.

``SyncConnection`` (``conn.sync``) and ``AsyncConnection`` (``conn.async_``, anyio) build
on this module; neither imports the other, so ``cfnctl`` never pays for anyio.

Both send msgpack frames, start with ``hello``, and match replies to requests
by id: the daemon may answer pipelined requests out of order, and a reply that
arrives after its request timed out is simply dropped.

Timeouts: ``timeout_s=None`` on a call means the connection's default;
``math.inf`` waits forever (for streams that may idle, such as follows).
On a stream the timeout bounds the wait for each frame, not the whole stream.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from cfn_client import __version__
from cfn_client.wire.errors import CfnError, DaemonUnreachable, ProtocolError, RequestTimeout
from cfn_client.wire.paths import default_socket_path
from cfn_client.wire.protocol import (
    PROTOCOL_VERSION,
    Args,
    EventFrame,
    Frame,
    HelloArgs,
    HelloResult,
    Response,
    decode_body,
    decode_response,
)

__all__ = ["DEFAULT_TIMEOUT_S", "ConnectionBase", "args_to_wire", "check_hello", "client_name"]

DEFAULT_TIMEOUT_S = 10.0
# The daemon's frame cap is configurable up to 64 MiB; the client must not be the side refusing.
CLIENT_MAX_FRAME_BYTES = 64 << 20
RECV_BYTES = 256 * 1024
# A write that cannot finish in this long means cfnd stopped reading: the connection is dead.
MIN_WRITE_TIMEOUT_S = 10.0

ArgsLike = Args | Mapping[str, Any] | None
Message = Response | EventFrame


def client_name() -> str:
    """How this client introduces itself in ``hello``."""
    return f"cfnctl/{__version__}"


def args_to_wire(args: ArgsLike) -> dict[str, Any]:
    """The ``args`` object of a request.

    For a Struct only fields that differ from their default are sent, so a newer
    client still talks to an older daemon as long as the new fields are unused.
    """
    if args is None:
        return {}
    if not isinstance(args, msgspec.Struct):
        return dict(args)
    out: dict[str, Any] = {}
    for name, encode_name, default, factory in _wire_fields(type(args)):
        value = getattr(args, name)
        if default is not msgspec.NODEFAULT and value == default:
            continue
        if factory is not msgspec.NODEFAULT and value == factory():
            continue
        out[encode_name] = msgspec.to_builtins(value)
    return out


@functools.cache
def _wire_fields(cls: type[msgspec.Struct]) -> tuple[tuple[str, str, Any, Any], ...]:
    """(name, wire name, default, default factory) per field of ``cls``, computed once:
    ``msgspec.structs.fields`` evaluates the annotations on every call (py-spy: 4% of
    a submitting client's samples)."""
    return tuple(
        (f.name, f.encode_name, f.default, f.default_factory) for f in msgspec.structs.fields(cls)
    )


def check_hello(raw: Any) -> HelloResult:
    """Validate the daemon's answer to ``hello``."""
    try:
        hello = msgspec.convert(raw, HelloResult)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"cfnd answered hello with an unexpected result: {exc}") from None
    if hello.protocol != PROTOCOL_VERSION:
        raise ProtocolError(
            f"cfnd {hello.server_version} speaks protocol {hello.protocol}, this client "
            f"speaks {PROTOCOL_VERSION}; use a cfnctl matching the daemon",
            code="protocol_mismatch",
            details={"server": hello.protocol, "client": PROTOCOL_VERSION},
        )
    return hello


def decode_message(frame: Frame) -> Message:
    try:
        return decode_response(decode_body(frame))
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"malformed reply from cfnd: {exc}") from None


def timeout_error(op: str, timeout: float, path: Path) -> RequestTimeout:
    return RequestTimeout(
        f"no reply from cfnd to {op!r} within {timeout:g}s (socket {path}); "
        "the daemon may be overloaded — retry, or raise --timeout",
        details={"op": op, "timeout_s": timeout, "socket": str(path)},
    )


def closed_error(path: Path, op: str | None, cause: object = None) -> DaemonUnreachable:
    """The connection ended (``op``: the request left without an answer, if known)."""
    what = f" before answering {op!r}" if op else ""
    why = f" ({cause})" if cause is not None else ""
    return DaemonUnreachable(
        f"cfnd closed the connection{what}{why}: it may have stopped or "
        f"restarted; check `cfnctl status` (socket {path}) and retry",
        details={"socket": str(path), "op": op, "reason": "closed", "cause": _text(cause)},
    )


def for_op(err: CfnError, op: str | None) -> CfnError:
    """A fresh copy of ``err`` to raise for request ``op``.

    One connection error may fail many requests; each gets its own instance (so
    tracebacks don't pile up on a shared one), and a generic "closed" error names the op.
    """
    details = err.details
    generic_close = details.get("reason") == "closed" and not details.get("op")
    if op and isinstance(err, DaemonUnreachable) and generic_close:
        return closed_error(Path(details["socket"]), op, details.get("cause"))
    copy = type(err)(err.message, details=dict(details), code=err.instance_code)
    copy.__cause__ = err.__cause__
    return copy


def _text(cause: object) -> str | None:
    return None if cause is None else str(cause)


class ConnectionBase:
    """What the sync and async connections share: socket path, timeouts, ids, handshake."""

    def __init__(
        self,
        socket_path: str | Path | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: str | None = None,
    ) -> None:
        self.socket_path = Path(socket_path) if socket_path is not None else default_socket_path()
        self.timeout_s = timeout_s
        self.client_name = client or client_name()
        #: The daemon's answer to the handshake, once connected.
        self.server: HelloResult | None = None
        self._ids = itertools.count(1)
        # Set once the connection can no longer be used; later calls raise it.
        self._dead: CfnError | None = None

    def _timeout(self, timeout_s: float | None) -> float:
        return self.timeout_s if timeout_s is None else timeout_s

    def _hello_args(self) -> HelloArgs:
        return HelloArgs(protocol=PROTOCOL_VERSION, client=self.client_name)
