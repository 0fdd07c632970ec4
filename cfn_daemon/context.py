"""What the background workers of one swarm share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cfn_client.swarm_schema import SwarmInfo
from cfn_daemon.agents import AgentRegistry
from cfn_daemon.config import Config
from cfn_daemon.store import Store
from cfn_daemon.tasks import TaskQueue


@dataclass(frozen=True, slots=True)
class SwarmContext:
    """One swarm's id, its Redis-backed services, and live views of config and record."""

    swarm: str
    store: Store
    tasks: TaskQueue
    registry: AgentRegistry
    config: Callable[[], Config]
    info: Callable[[], SwarmInfo | None]
