"""Lua scripts for every multi-key state change, loaded once per client.

Each script in ``lua/`` gets ``prelude.lua`` prepended; redis-py's Script objects
use EVALSHA and reload transparently after a Redis restart (NOSCRIPT).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript

SCRIPT_NAMES = (
    "submit", "assign", "start", "complete", "requeue", "cancel", "register", "heartbeat",
    "page", "retain", "reindex", "forget_agent", "summaries", "upload", "claim_swarm",
    "raise_cap",
)  # fmt: skip


def _source(name: str) -> str:
    return (resources.files("cfn_daemon.store") / "lua" / f"{name}.lua").read_text("utf-8")


class Scripts:
    """Registered scripts; ``await scripts.run("submit", keys, args)``."""

    def __init__(self, redis: Any) -> None:
        prelude = _source("prelude")
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(prelude + "\n" + _source(name)) for name in SCRIPT_NAMES
        }

    async def run(self, name: str, keys: list[str], args: list[Any], client: Any = None) -> Any:
        """Run a script; with ``client`` a pipeline, it is queued there instead."""
        return await self._scripts[name](keys=keys, args=args, client=client)
