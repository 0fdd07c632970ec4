"""Signed task results ("seals"): what an agent signs when it reports a task's end,
and the pure check cfnd makes before the CFN loop trusts that report.

A seal is the agent's Ed25519 signature over a canonical encoding of (swarm, task id,
attempt, incarnation, agent id, outcome, SHA-256 of the stored result JSON). It
travels in the same Lua call that stores the result (``complete.lua``), so sealing
costs one signature and no extra round trip. Because the exact stored bytes are
hashed, any change to the result (output, confidence, a vote, the claimed agent or
attempt) breaks it; a seal copied from another task, attempt or agent process does
not match what that task's record says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import msgspec

_DOMAIN = "cfn-result-v1"  # a vote signature (another domain) never verifies as a seal
_PREFIX = "ed25519:"  # util.signing's text form of a signature


def pack(seal: str) -> bytes:
    """The stored form of a seal: its 64 raw signature bytes.

    The text form (``ed25519:`` + 128 hex digits) is 136 bytes; one value over 64
    bytes turns the whole task hash from a listpack into a hashtable (about three
    times the memory), so the hash keeps the raw bytes. Anything else is kept as it
    is, for ``check`` to refuse.
    """
    if seal.startswith(_PREFIX):
        try:
            return bytes.fromhex(seal[len(_PREFIX) :])
        except ValueError:
            pass
    return seal.encode()


def unpack(stored: bytes | str) -> str:
    """The text form of a stored seal ("" when none)."""
    if isinstance(stored, str):
        return stored
    if len(stored) == 64:
        return _PREFIX + stored.hex()
    return stored.decode(errors="replace")


class Sealed(msgspec.Struct, frozen=True, kw_only=True):
    """What a finished task's record says about its result, as read from Redis."""

    swarm: str
    task_id: str
    attempt: int  # the task's attempt counter (``attempts``)
    incarnation: str  # which process of ``agent`` started that attempt (``inc:<agent>``)
    agent: str  # who the stored result says ran it
    ok: bool  # the outcome the record claims (status succeeded)
    result_json: bytes  # the stored result, byte for byte
    seal: str  # the signature stored with it ("" when none)


def result_message(
    swarm: str, task_id: str, attempt: int, incarnation: str, agent: str, ok: bool, result: bytes
) -> bytes:
    """The bytes an agent signs for a result it stores (and cfnd re-builds to verify)."""
    digest = hashlib.sha256(result).hexdigest()
    outcome = "ok" if ok else "failed"
    return msgspec.json.encode(
        [_DOMAIN, swarm, task_id, attempt, incarnation, agent, outcome, digest]
    )


def check(
    record: Sealed,
    *,
    claimed_attempt: int,
    claimed_agent: str,
    verify: Callable[[bytes, str], bool],
) -> str | None:
    """None when ``record`` is sealed exactly as it stands; else why not.
    ``verify(message, signature)`` checks a signature with the signer's pinned key.

    ``claimed_attempt`` / ``claimed_agent`` are the ones inside the stored result (it
    says which attempt and agent it is for): both must agree with the task record, so
    an old attempt's result (and seal) put back after a retry is refused.
    """
    if not record.seal:
        return "unsigned result"
    if claimed_agent != record.agent:
        return f"result names agent {claimed_agent!r}, the task record {record.agent!r}"
    if claimed_attempt != record.attempt:
        return f"result of attempt {claimed_attempt}, the task is at attempt {record.attempt}"
    message = result_message(
        record.swarm,
        record.task_id,
        record.attempt,
        record.incarnation,
        record.agent,
        record.ok,
        record.result_json,
    )
    if not verify(message, record.seal):
        return "bad signature"
    return None
