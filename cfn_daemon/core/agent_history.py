"""Which events concern an agent, and its exits and replacements (``agent.debug``)."""

from __future__ import annotations

import re
from typing import Any

from cfn_client.wire.schema.debug import AgentExit
from cfn_client.wire.schema.swarm import Event

#: Event types that take an agent out of service (the supervisor's and registry's).
EXIT_TYPES = ("agent.failed", "agent.lost", "agent.stopped")
# Data fields that name agents in cfn's events.
_AGENT_FIELDS = ("agent", "agents", "replacement", "slot", "from", "to", "validator")
# The supervisor's reason for a local agent that died: "process exited with <code>".
_EXIT = re.compile(r"exited with (-?\d+)")


def mentions(event: Event, agent: str) -> bool:
    """True when one of the event's agent fields names ``agent``."""
    for name in _AGENT_FIELDS:
        value: Any = event.data.get(name)
        if value == agent or (isinstance(value, list) and agent in value):
            return True
    return False


def exits(events: list[Event], agent: str) -> list[AgentExit]:
    """The agent's exits, oldest first."""
    out = []
    for ev in events:
        if ev.type in EXIT_TYPES and ev.data.get("agent") == agent:
            requeued = ev.data.get("requeued") or []
            reason = str(ev.data.get("reason", ""))
            code = _EXIT.search(reason)
            out.append(
                AgentExit(
                    ts_ms=ev.ts_ms,
                    status=ev.type.removeprefix("agent."),
                    reason=reason,
                    exit_code=int(code.group(1)) if code else None,
                    requeued=[str(t) for t in requeued] if isinstance(requeued, list) else [],
                )
            )
    return out


def replacement_of(events: list[Event], agent: str) -> tuple[str | None, str | None]:
    """(the agent ``agent`` replaced, the agent that replaced it), from agent.replaced."""
    replaces = replaced_by = None
    for ev in events:
        if ev.type != "agent.replaced":
            continue
        if ev.data.get("replacement") == agent:
            replaces = str(ev.data.get("agent"))
        elif ev.data.get("agent") == agent:
            replaced_by = str(ev.data.get("replacement"))
    return replaces, replaced_by
