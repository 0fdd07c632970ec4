"""Each request's swarm is resolved from cached ids (swarm/swarm_ids.py); a swarm another
cfnd sharing the Redis creates or destroys invalidates the cache at once."""

from __future__ import annotations

import asyncio

import pytest

from cfn_client.api import AsyncClient
from cfn_client.wire.errors import InvalidArgs
from cfn_daemon.app import Daemon
from tests.conftest import DaemonFactory


def heard(d: Daemon) -> asyncio.Event:
    """Set when ``d`` hears that the swarms set changed."""
    event = asyncio.Event()
    d.hub.on_swarms_changed(event.set)
    return event


async def test_another_cfnds_swarm_changes_reach_the_cache(daemon_factory: DaemonFactory) -> None:
    d1, d2 = await daemon_factory(), await daemon_factory()
    async with AsyncClient(d1.socket_path, timeout_s=30) as c1:
        await c1.call("swarm.init", topology="mesh", max_agents=2, name="one")
    assert await d1.swarms.resolve(None) == "one"  # now cached in d1
    assert d1.swarms.swarm_ids._ids == ["one"]
    changed = heard(d1)
    async with AsyncClient(d2.socket_path, timeout_s=30) as c2:
        await c2.call("swarm.init", topology="mesh", max_agents=2, name="two")
        await asyncio.wait_for(changed.wait(), 10)
        with pytest.raises(InvalidArgs, match="several swarms"):
            await d1.swarms.resolve(None)
        changed.clear()
        await c2.call("swarm.destroy", swarm="two", force=True)
        await asyncio.wait_for(changed.wait(), 10)
    assert await d1.swarms.resolve(None) == "one"
