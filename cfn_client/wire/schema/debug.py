"""Schemas of ``agent.debug``: everything known about one agent, for troubleshooting."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from cfn_client.wire.protocol import Result
from cfn_client.wire.schema.swarm import AgentInfo, AgentRefArgs, Event

#: Log tail sizes (bytes): the default and with ``verbose``.
LOG_TAIL_BYTES = 4096
VERBOSE_LOG_TAIL_BYTES = 64 * 1024
MAX_DEBUG_EVENTS = 1000


class AgentDebugArgs(AgentRefArgs, kw_only=True):
    """``events``: how many of the latest events that mention the agent (default 20, 50
    with ``verbose``); ``verbose`` adds the raw record and a longer log tail."""

    verbose: bool = False
    events: Annotated[int, Meta(ge=0, le=MAX_DEBUG_EVENTS)] | None = None


class WorkEntry(Result, kw_only=True):
    """One entry of the agent's work stream: a task assigned to it and not yet
    acknowledged. ``delivered``: the agent has read it (it is in the group's PEL)."""

    entry_id: str
    task: str
    delivered: bool
    idle_ms: int | None = None  # since it was (last) delivered to the agent
    deliveries: int = 0


class AgentExit(Result, kw_only=True):
    """An agent leaving service, from the swarm's events (agent.failed / lost / stopped);
    ``exit_code``: its process's, when the reason gives it (negative: killed by signal)."""

    ts_ms: int
    status: str
    reason: str = ""
    exit_code: int | None = None
    requeued: list[str] = []


class RestartHistory(Result, kw_only=True):
    """What the supervisor knows about restarts of the agent's slot.

    ``restarts``: the record's restart count; ``exits``: the agent's exits (newest last);
    ``replaces``: the dead agent this one replaced; ``replaced_by``: its replacement;
    ``pending_replacement``: a replacement waits for its backoff, due in
    ``replacement_due_in_s``; ``starts_last_minute`` of ``max_per_minute`` replacement
    starts spent in the swarm's current window (``core.restarts``)."""

    restarts: int = 0
    exits: list[AgentExit] = []
    replaces: str | None = None
    replaced_by: str | None = None
    pending_replacement: bool = False
    replacement_due_in_s: float | None = None
    starts_last_minute: int = 0
    max_per_minute: int = 0
    backoff_s: float = 0.0
    backoff_max_s: float = 0.0


class AgentDebugResult(Result, kw_only=True):
    """``log_path`` is where cfnd writes a local agent's stdout / stderr (empty for a
    remote agent or one of another host); ``log_tail`` its last ``log_tail_bytes`` at
    most (from a line start), ``log_bytes`` the file's size."""

    agent: AgentInfo
    desired: str = ""
    supervised_here: bool = False
    work: list[WorkEntry] = []
    work_total: int = 0
    events: list[Event] = []
    restart: RestartHistory
    log_path: str = ""
    log_tail: str = ""
    log_bytes: int = 0
    log_truncated: bool = False
    record: dict[str, str] = {}  # with verbose: the agent's raw Redis hash
