"""Pure tests of framing and envelope decoding (no sockets)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfn_client.wire.errors import CfnError, InvalidArgs, NotFound, PermissionDenied, ProtocolError
from cfn_client.wire.ops import OPS, lookup_op
from cfn_client.wire.protocol import (
    Frame,
    FrameDecoder,
    FrameFault,
    Request,
    Response,
    decode_args,
    decode_body,
    encode_frame,
    error_response,
    parse_request,
    raise_for_error,
    request_id_of,
)
from cfn_client.wire.schema.system import ConfigSetArgs


def frames(items: list[Frame | FrameFault]) -> list[Frame]:
    assert all(isinstance(i, Frame) for i in items), items
    return [i for i in items if isinstance(i, Frame)]


def test_json_and_msgpack_frames_interleave() -> None:
    req = Request(id=1, op="ping")
    data = encode_frame(req, "json") + encode_frame(req, "msgpack") + b"\n\r\n"
    data += encode_frame(Request(id="x", op="status", args={"verbose": True}), "json")
    got = frames(FrameDecoder().feed(data))
    assert [f.framing for f in got] == ["json", "msgpack", "json"]
    assert parse_request(decode_body(got[2])).args == {"verbose": True}


@given(st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=20))
def test_any_split_of_the_stream_yields_the_same_frames(cuts: list[int]) -> None:
    reqs = [Request(id=i, op="ping", args={"n": "x" * i}) for i in range(6)]
    data = b"".join(encode_frame(r, "msgpack" if i % 2 else "json") for i, r in enumerate(reqs))
    dec = FrameDecoder()
    out: list[Frame | FrameFault] = []
    pos = 0
    for cut in cuts:
        out += dec.feed(data[pos : pos + cut])
        pos += cut
    out += dec.feed(data[pos:])
    assert [parse_request(decode_body(f)).id for f in frames(out)] == list(range(6))
    assert dec.eof() is None


def test_oversized_msgpack_frame_is_fatal_and_names_sizes() -> None:
    dec = FrameDecoder(max_frame_bytes=1024)
    (fault,) = dec.feed((2 << 20).to_bytes(4, "big") + b"xx")
    assert isinstance(fault, FrameFault)
    assert fault.fatal
    assert fault.error.instance_code == "frame_too_large"
    assert fault.error.details == {"size": 2 << 20, "max_frame_bytes": 1024}
    assert dec.feed(b"more") == []


def test_oversized_json_line_is_fatal() -> None:
    dec = FrameDecoder(max_frame_bytes=100)
    assert dec.feed(b"{" + b"a" * 50) == []
    (fault,) = dec.feed(b"a" * 60)
    assert isinstance(fault, FrameFault)
    assert fault.error.instance_code == "frame_too_large"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b'{"op": "ping"', "JSON frame"),
        (b"\x00\x00", "length prefix (2 of 4"),
        (b"\x00\x00\x00\x10abc", "3 of 16"),
    ],
)
def test_truncated_frames_reported_at_eof(data: bytes, fragment: str) -> None:
    dec = FrameDecoder()
    assert dec.feed(data) == []
    fault = dec.eof()
    assert fault is not None
    assert fault.error.instance_code == "truncated_frame"
    assert fragment in fault.error.message


def test_empty_msgpack_frame_is_a_nonfatal_fault() -> None:
    dec = FrameDecoder()
    items = dec.feed(b"\x00\x00\x00\x00" + encode_frame(Request(id=1, op="ping"), "msgpack"))
    assert isinstance(items[0], FrameFault)
    assert not items[0].fatal
    assert isinstance(items[1], Frame)


@pytest.mark.parametrize(
    ("frame", "code", "fragment"),
    [
        (Frame("json", b'{"op": \xff}'), "invalid_frame", "not valid UTF-8 (byte 7"),
        (Frame("json", b"{nope"), "invalid_frame", "does not parse"),
        (Frame("msgpack", b"\xc1"), "invalid_frame", "msgpack frame does not parse"),
    ],
)
def test_undecodable_bodies(frame: Frame, code: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_body(frame)
    assert info.value.instance_code == code
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ([1, 2], "got list"),
        ({"id": 1}, "missing required field `op`"),
        ({"op": 5}, "Expected `str`, got `int`"),
        ({"op": "ping", "extra": 1}, "unknown field `extra`"),
        ({"op": "ping", "args": []}, "Expected `object`, got `array`"),
    ],
)
def test_bad_envelopes(obj: object, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(obj)
    assert info.value.instance_code == "invalid_request"
    assert fragment in info.value.message


def test_request_id_recovered_from_bad_envelope() -> None:
    assert request_id_of({"id": 7, "op": 5}) == 7
    assert request_id_of({"id": True}) is None
    assert request_id_of("x") is None


def test_unknown_op_suggests_close_matches() -> None:
    with pytest.raises(ProtocolError) as info:
        lookup_op("config.sett")
    assert info.value.instance_code == "unknown_op"
    assert "config.set" in info.value.details["close_matches"]
    assert "did you mean" in info.value.message


def test_invalid_args_name_field_and_type() -> None:
    with pytest.raises(InvalidArgs) as info:
        decode_args(ConfigSetArgs, {"key": "loop.max_loop2", "value": 3})
    assert "`$.value`" in info.value.message
    assert info.value.details["schema"] == {"key": "string", "value": "string"}
    with pytest.raises(InvalidArgs, match="unknown field `bogus`"):
        decode_args(ConfigSetArgs, {"key": "k", "value": "v", "bogus": 1})


def test_every_op_has_struct_schemas() -> None:
    for name, spec in OPS.items():
        assert issubclass(spec.args, msgspec.Struct), name
        assert issubclass(spec.result, msgspec.Struct), name


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("not_found", NotFound),
        ("permission_denied", PermissionDenied),
        ("unknown_op", ProtocolError),
        ("something_new", CfnError),
    ],
)
def test_error_roundtrip_keeps_code_and_class(code: str, cls: type[CfnError]) -> None:
    resp = error_response(3, CfnError("boom", code=code, details={"a": 1}))
    wire = msgspec.json.decode(encode_frame(resp, "json"), type=Response)
    with pytest.raises(cls) as info:
        raise_for_error(wire)
    assert info.value.instance_code == code
    assert info.value.details == {"a": 1}
