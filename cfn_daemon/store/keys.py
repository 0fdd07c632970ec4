"""Every Redis key and channel name cfn uses, in one place.

Keys of one swarm carry the hash tag ``{<swarm>}`` so multi-key Lua scripts and
MULTI blocks work on Redis Cluster (all of a swarm's keys share one slot).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "cfn"
# Consumer groups: the daemon's dispatcher reads the shared priority queues; each
# agent reads its own work stream.
DISPATCH_GROUP = "dispatch"
DISPATCH_CONSUMER = "cfnd"
AGENT_GROUP = "agent"
EVENTS_MAXLEN = 10_000
# Executions kept per agent for `cfnctl metrics` (guide §9).
PERF_KEEP = 1000
# Upper bounds (seconds) of the task duration histogram kept in each swarm's stats hash.
DURATION_BUCKETS_S = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
# Task statuses in lifecycle order; each has its own index zset (see status_index) and
# the Lua scripts that move a task pass all of them, in this order, as their last KEYS.
TASK_STATUSES = (
    "queued", "assigned", "running", "retrying", "succeeded", "failed", "cancelled",
)  # fmt: skip
# swarm_state field: the status indexes are complete (a swarm made by an older cfnd
# gets them rebuilt once on start; see TaskQueue.ensure_indexes).
TASK_INDEX_FIELD = "task_index"
TASK_INDEX_VERSION = "1"


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
    def agent_types(self) -> str:
        """hash: agent type → JSON executor config, published by cfnd for remote agents."""
        return f"{self.prefix}:agent_types"

    @property
    def team_roles(self) -> str:
        """hash: team role name → JSON TeamRole (grants and agent pools)."""
        return f"{self.prefix}:team:roles"

    @property
    def team_members(self) -> str:
        """hash: ``user\nrole`` → "1", one field per assignment (assigning is one HSET)."""
        return f"{self.prefix}:team:members"

    @property
    def audit(self) -> str:
        """stream (MAXLEN~ audit.max_entries): one entry per mutating op or denied request."""
        return f"{self.prefix}:audit"

    @property
    def alerts(self) -> str:
        """channel: critical events (Redis health, denial bursts, destroy, auth changes)."""
        return f"{self.prefix}:alerts"

    @property
    def daemon_events(self) -> str:
        """stream (MAXLEN~ EVENTS_MAXLEN): daemon-wide events (alerts), fields as in a
        swarm's events stream (type, ts, data)."""
        return f"{self.prefix}:events"

    @property
    def notify_pattern(self) -> str:
        """pattern matching every swarm's notify channel (one PSUBSCRIBE per daemon)."""
        return f"{self.prefix}:{{*}}:notify"

    # ---- per-swarm keys (hash-tagged)
    def _s(self, swarm: str) -> str:
        return f"{self.prefix}:{{{swarm}}}"

    def swarm_state(self, swarm: str) -> str:
        return f"{self._s(swarm)}:state"

    def agents(self, swarm: str) -> str:
        """set: the swarm's agent ids (each agent's record is its own hash, see agent())."""
        return f"{self._s(swarm)}:agents"

    def agent(self, swarm: str, agent: str) -> str:
        """hash: one agent's record (AgentInfo fields plus load, concurrency, ewma_ms)."""
        return f"{self._s(swarm)}:agent:{agent}"

    def work(self, swarm: str, agent: str) -> str:
        """stream + group ``agent``: tasks assigned to one agent."""
        return f"{self._s(swarm)}:work:{agent}"

    def tasks(self, swarm: str) -> str:
        """zset: task id → created ms (listing, retention)."""
        return f"{self._s(swarm)}:tasks"

    def status_index(self, swarm: str, status: str) -> str:
        """zset: ids of the tasks in ``status`` → ms they entered it. Kept by the Lua
        scripts that change a task's status, so counts are ZCARDs (O(1)), listing by
        status pages exactly, and retention takes ranges of the finished ones."""
        return f"{self._s(swarm)}:st:{status}"

    def status_indexes(self, swarm: str) -> list[str]:
        """Every status index, in TASK_STATUSES order (the scripts' last KEYS)."""
        return [self.status_index(swarm, s) for s in TASK_STATUSES]

    def upload(self, swarm: str, upload_id: str) -> str:
        """string (with a TTL): a task text being sent in chunks (``task.upload``)."""
        return f"{self._s(swarm)}:upload:{upload_id}"

    def delayed(self, swarm: str) -> str:
        """zset: task id → due ms for retries waiting out their backoff."""
        return f"{self._s(swarm)}:delayed"

    def notify(self, swarm: str) -> str:
        """channel: wake-ups, space-separated words, one message per change (``ev`` new
        event, ``done:<task>``, ``agent``, ``cap:<agent>:<load>:<status>``, ``queued``,
        ``swarms``; see queue/notify.py)."""
        return f"{self._s(swarm)}:notify"

    def heartbeats(self, swarm: str) -> str:
        return f"{self._s(swarm)}:hb"

    def supervisor(self, swarm: str) -> str:
        """string with a TTL: a cfnd supervises this swarm's local agents (its lease)."""
        return f"{self._s(swarm)}:supervisor"

    def queue(self, swarm: str, priority: str) -> str:
        return f"{self._s(swarm)}:q:{priority}"

    def direct(self, swarm: str, agent_type: str, priority: str) -> str:
        """stream + group ``agent``: untargeted tasks of one type that its agents read
        themselves (``[tasks] dispatch = "direct"``; see queue/direct.py)."""
        return f"{self._s(swarm)}:dq:{agent_type}:{priority}"

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
        """stream: every vote submitted in one round, in arrival order. Only the first
        per validator counts; a later different one is recorded as an equivocation."""
        return f"{self._s(swarm)}:votes:{run_id}:{round_no}"

    def tokens(self, swarm: str) -> str:
        """hash: agent id → its vote-signing token (trust on first use)."""
        return f"{self._s(swarm)}:tokens"

    def runs(self, swarm: str) -> str:
        """zset: CFN run id → created ms."""
        return f"{self._s(swarm)}:runs"

    def epic(self, swarm: str, epic_id: str) -> str:
        """hash: an epic's spec, creation time and ``phase:<name>`` → run id."""
        return f"{self._s(swarm)}:epic:{epic_id}"

    def epics(self, swarm: str) -> str:
        """zset: epic id → created ms."""
        return f"{self._s(swarm)}:epics"

    def idempotency(self, swarm: str, key: str) -> str:
        """string (with a TTL): a client's idempotency key → the task it submitted."""
        return f"{self._s(swarm)}:idem:{key}"

    def stats(self, swarm: str) -> str:
        """hash: the swarm's task counters (done, failed, retried, dead_lettered) and task
        duration histograms (``dur:<type>:<bucket>``), kept by complete.lua."""
        return f"{self._s(swarm)}:stats"

    def perf(self, swarm: str, agent: str) -> str:
        """list: the agent's last PERF_KEEP executions, newest first (complete.lua)."""
        return f"{self._s(swarm)}:perf:{agent}"

    def dlq(self, swarm: str) -> str:
        return f"{self._s(swarm)}:dlq"
