"""Votes in Redis: each round's vote stream, written by validators, read by cfnd.

A stream (not a hash) keeps every vote a validator sent, so an equivocation is visible.
"""

from __future__ import annotations

from typing import Any

import msgspec

from cfn_daemon.core.consensus import Vote


async def submit_vote(redis: Any, key: str, vote: Vote) -> None:
    """Append a (signed) vote to the round's vote stream."""
    await redis.xadd(key, {"validator": vote.validator, "vote": msgspec.json.encode(vote)})


async def read_votes(redis: Any, key: str) -> list[Vote]:
    """Every vote submitted in the round, oldest first (undecodable entries skipped)."""
    out = []
    for _, fields in await redis.xrange(key):
        try:
            out.append(msgspec.json.decode(fields[b"vote"], type=Vote))
        except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
            continue
    return out
