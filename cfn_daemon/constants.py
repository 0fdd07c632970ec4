"""Every Redis key and channel name cfn uses, in one place.

Keys of one swarm carry the hash tag ``{<swarm>}`` so multi-key Lua scripts and
MULTI blocks work on Redis Cluster (all of a swarm's keys share one slot).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "cfn"
PRIORITIES = ("high", "normal", "low")


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix (``cfn`` unless configured)."""

    prefix: str = DEFAULT_PREFIX

    # ---- global keys
    @property
    def swarms(self) -> str:
        """set: swarm ids."""
        return f"{self.prefix}:swarms"

    @property
    def config(self) -> str:
        """hash: runtime config overrides, key → JSON value."""
        return f"{self.prefix}:config"

    @property
    def config_channel(self) -> str:
        """channel: a config override changed (payload: the key or ``*``)."""
        return f"{self.prefix}:config:changed"

    @property
    def leader(self) -> str:
        """string (SET NX PX): the active daemon's lease and fencing token."""
        return f"{self.prefix}:leader"

    @property
    def audit(self) -> str:
        """stream: audit entries of mutating ops."""
        return f"{self.prefix}:audit"

    @property
    def alerts(self) -> str:
        """channel: critical alerts."""
        return f"{self.prefix}:alerts"

    def metrics(self, name: str) -> str:
        return f"{self.prefix}:metrics:{name}"

    # ---- per-swarm keys (hash-tagged)
    def _s(self, swarm: str) -> str:
        return f"{self.prefix}:{{{swarm}}}"

    def swarm_state(self, swarm: str) -> str:
        return f"{self._s(swarm)}:state"

    def agents(self, swarm: str) -> str:
        return f"{self._s(swarm)}:agents"

    def heartbeats(self, swarm: str) -> str:
        return f"{self._s(swarm)}:hb"

    def queue(self, swarm: str, priority: str) -> str:
        return f"{self._s(swarm)}:q:{priority}"

    def task(self, swarm: str, task_id: str) -> str:
        return f"{self._s(swarm)}:task:{task_id}"

    def inbox(self, swarm: str, agent: str) -> str:
        return f"{self._s(swarm)}:inbox:{agent}"

    def events(self, swarm: str) -> str:
        """stream (MAXLEN~) of the swarm's history; also the pub/sub channel name."""
        return f"{self._s(swarm)}:events"

    def run(self, swarm: str, run_id: str) -> str:
        return f"{self._s(swarm)}:run:{run_id}"

    def run_log(self, swarm: str, run_id: str) -> str:
        return f"{self._s(swarm)}:run:{run_id}:log"

    def votes(self, swarm: str, run_id: str, round_no: int) -> str:
        return f"{self._s(swarm)}:votes:{run_id}:{round_no}"

    def dlq(self, swarm: str) -> str:
        return f"{self._s(swarm)}:dlq"
