"""The compact stored form of a task's result (queue/stored.py). Pure."""

from __future__ import annotations

from cfn_client.wire.schema.swarm import TaskResult
from cfn_daemon.queue.stored import decode_result, encode_result


def test_a_small_success_fits_a_listpack_value_and_round_trips() -> None:
    ok = TaskResult(ok=True, agent="noop-361082", attempt=2, confidence=1.0, duration_ms=0.26932)
    raw = encode_result(ok)
    # Redis keeps the task hash a listpack only while every value is <= 64 bytes.
    assert len(raw) <= 64, raw
    back = decode_result(raw, agent="noop-361082", attempt=2)
    assert back == TaskResult(
        ok=True, agent="noop-361082", attempt=2, confidence=1.0, duration_ms=0.269
    )


def test_a_failure_keeps_its_agent_and_attempt_and_every_set_field() -> None:
    bad = TaskResult(
        ok=False, agent="a1", attempt=1, exit_code=3, output="o", stderr="e", error="boom",
        feedback={"k": [1]}, vote="reject", duration_ms=12.5,
    )  # fmt: skip
    # The hash's agent / attempt may have moved on (a retry): the stored ones count.
    assert decode_result(encode_result(bad), agent="", attempt=2) == bad


def test_a_whole_result_stored_by_an_older_cfnd_still_decodes() -> None:
    import msgspec

    old = TaskResult(ok=True, agent="a1", attempt=1, output="hi")
    assert decode_result(msgspec.json.encode(old), agent="other", attempt=5) == old


def test_a_seal_is_stored_as_its_raw_bytes_and_read_back_as_text() -> None:
    from cfn_daemon.core.seals import pack, unpack
    from cfn_daemon.util.signing import Signer

    text = Signer().sign(b"m")
    assert len(pack(text)) == 64 and unpack(pack(text)) == text
    # Anything that is not a signature is kept as it is (the check then refuses it).
    assert unpack(pack("forged")) == "forged" and pack("") == b""
