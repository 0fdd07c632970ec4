"""What the background workers of one swarm share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cfn_client.wire.schema.swarm import SwarmInfo
from cfn_daemon.queue.agents import AgentRegistry
from cfn_daemon.queue.tasks import TaskQueue
from cfn_daemon.settings.schema import Config
from cfn_daemon.store import Store


@dataclass(frozen=True, slots=True)
class SwarmContext:
    """One swarm's id, its Redis-backed services, and live views of config and record."""

    swarm: str
    store: Store
    tasks: TaskQueue
    registry: AgentRegistry
    config: Callable[[], Config]
    info: Callable[[], SwarmInfo | None]
