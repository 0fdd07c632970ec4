"""What the background workers of one swarm share (and the one thing all swarms share)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from cfn_client.wire.schema.swarm import SwarmInfo
from cfn_daemon.agent import types as agent_types
from cfn_daemon.core.placement import LLM_KINDS, LlmRoom, llm_room
from cfn_daemon.queue.agents import AgentRegistry
from cfn_daemon.queue.tasks import TaskQueue
from cfn_daemon.settings.schema import Config
from cfn_daemon.store import Store
from cfn_daemon.util.restart import Keeper

log = structlog.get_logger("cfn.dispatch")


class LlmSlots:
    """``[agents] max_llm_processes``: LLM CLI processes in flight across every swarm.

    One per cfnd (owned by ``SwarmService``), consulted by every swarm's dispatcher.
    An LLM task is one whose agent type runs an executor of kind ``claude`` or
    ``codex``; its processes are the ``load`` of the agents of such types (a
    reliability task counts both replicas). Each dispatcher pass reports its swarm's
    LLM load (including what it is about to assign) and gets the room left under the
    cap, ``cap - sum of every swarm's load``; LLM tasks that do not fit stay in the
    queue. When a swarm's load drops, the swarms that held LLM tasks back are woken
    (``wake``), so the waiting work starts as soon as an LLM process ends.

    Loads are what each dispatcher last read from Redis: a swarm not yet read since
    cfnd started (adopted agents still running) counts from its first pass on.
    """

    def __init__(self, wake: Callable[[str], None] | None = None) -> None:
        self._wake = wake
        self._loads: dict[str, int] = {}
        self._held: set[str] = set()
        self._config: Config | None = None
        self._kinds: dict[str, bool] = {}

    def is_llm(self, agent_type: str, config: Config) -> bool:
        """Whether agents of ``agent_type`` run an LLM CLI (cached per config object)."""
        if config is not self._config:
            self._config, self._kinds = config, {}
        known = self._kinds.get(agent_type)
        if known is None:
            kind: str
            try:
                kind = agent_types.resolve(agent_type, config.agent_types).executor.kind
            except Exception as exc:  # unknown or invalid here: it cannot be an LLM type
                log.debug("llm_kind_unknown", type=agent_type, error=str(exc))
                kind = ""
            known = self._kinds[agent_type] = kind in LLM_KINDS
        return known

    def load(self, swarm: str) -> int | None:
        """The swarm's last reported LLM load; None if it has not reported yet."""
        return self._loads.get(swarm)

    @property
    def total(self) -> int:
        return sum(self._loads.values())

    def room(self, swarm: str, own_load: int, cap: int) -> LlmRoom | None:
        """Room under ``cap`` with ``own_load`` for ``swarm`` (instead of its last report)."""
        others = (n for s, n in self._loads.items() if s != swarm)
        return llm_room(cap, [own_load, *others])

    def report(self, swarm: str, load: int, *, held: bool = False) -> None:
        """``swarm`` runs ``load`` LLM processes now; ``held``: it keeps LLM tasks waiting."""
        before = self._loads.get(swarm)
        self._loads[swarm] = load
        if held:
            self._held.add(swarm)
        else:
            self._held.discard(swarm)
        if before is not None and load < before:
            self._wake_held(swarm)

    def forget(self, swarm: str) -> None:
        """The swarm's runtime ended: its load no longer counts."""
        before = self._loads.pop(swarm, None)
        self._held.discard(swarm)
        if before:
            self._wake_held(swarm)

    def _wake_held(self, freed_by: str) -> None:
        if self._wake is None:
            return
        for swarm in sorted(self._held - {freed_by}):
            self._wake(swarm)


@dataclass(frozen=True, slots=True)
class SwarmContext:
    """One swarm's id, its Redis-backed services, and live views of config and record."""

    swarm: str
    store: Store
    tasks: TaskQueue
    registry: AgentRegistry
    config: Callable[[], Config]
    info: Callable[[], SwarmInfo | None]
    llm: LlmSlots  # shared by every swarm of this cfnd
    keeper: Keeper  # restarts the swarm's background loops when they fail
