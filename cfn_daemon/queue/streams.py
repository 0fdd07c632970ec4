"""Small steps on a consumer group's streams, shared by the places that hand entries back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cfn_daemon.store.keys import AGENT_GROUP


async def ack_and_delete(
    redis: Any, stream: str, entry_ids: Sequence[Any], group: str = AGENT_GROUP
) -> None:
    """Acknowledge ``entry_ids`` in ``group`` and delete them, in one MULTI: nothing stays
    pending, and the stream (with its group) is kept."""
    if not entry_ids:
        return
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xack(stream, group, *entry_ids)
        pipe.xdel(stream, *entry_ids)
        await pipe.execute()
