"""Human output for swarms, agents and messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cfn_client.cli.render.common import (
    fields,
    format_age,
    format_counts,
    format_duration,
    format_time,
    now_ms,
    table,
)
from cfn_client.wire.schema.swarm import (
    AgentInfo,
    DeliveriesResult,
    SwarmDestroyResult,
    SwarmInfo,
    SwarmListResult,
    SwarmScaleResult,
    SwarmStatusResult,
)


def swarm_init(info: SwarmInfo) -> str:
    """``cfnctl swarm init``."""
    text = (
        f"swarm {swarm_label(info)} created: {info.topology}, {info.strategy}, "
        f"up to {info.max_agents} agents"
    )
    if info.ephemeral:
        ttl = format_duration(max(0, info.expires_at_ms - info.created_ms) / 1000)
        ends = format_time(info.expires_at_ms)
        text += f"\ntest mode: removed when cfnd stops, or in {ttl} (at {ends})"
    return text


def swarm_label(info: SwarmInfo) -> str:
    """``web`` or, when the name differs from the id, ``s-1 (web)``."""
    return info.id if info.name in ("", info.id) else f"{info.id} ({info.name})"


def swarm_list(result: SwarmListResult, current: str | None = None) -> str:
    """``cfnctl swarm list``; ``*`` marks the ``current`` swarm."""
    if not result.swarms:
        return "no swarms (create one with `cfnctl swarm init TOPOLOGY MAX_AGENTS`)"
    now = now_ms()
    rows = [
        ["*" if s.id == current else "", s.id, s.name, s.topology, s.strategy,
         f"{s.agents}/{s.max_agents}", s.status, format_age(s.created_ms, now)]
        for s in result.swarms
    ]  # fmt: skip
    return table(["", "ID", "NAME", "TOPOLOGY", "STRATEGY", "AGENTS", "STATUS", "AGE"], rows)


def swarm_status(result: SwarmStatusResult, verbose: bool = False) -> str:
    """``cfnctl swarm status``: the swarm, its queues and tasks, then its agents."""
    info = result.swarm
    head = fields(
        [
            ("swarm", swarm_label(info)),
            ("status", info.status),
            ("topology", f"{info.topology}, {info.strategy}"),
            ("agents", f"{len(result.agents)} of at most {info.max_agents}"),
            ("created", format_time(info.created_ms)),
            ("queued", format_counts(result.queues)),
            ("tasks", format_counts(result.tasks)),
        ]
    )
    body = agents_table(result.agents, verbose) if result.agents else "no agents"
    return head + "\n\n" + body


def agents_table(agents: Sequence[AgentInfo], verbose: bool = False, **table_opts: Any) -> str:
    """Agents, one per row; ``verbose`` adds where they run and what they can do.
    ``table_opts``: ``width`` and ``colour`` of ``table``."""
    headers = ["ID", "TYPE", "ROLE", "STATUS", "TASK", "HEARTBEAT", "DONE/FAILED"]
    if verbose:
        headers += ["HOST", "PID", "RESTARTS", "CAPABILITIES"]
    rows = []
    for a in agents:
        heartbeat = (
            "-" if a.heartbeat_age_ms is None else format_duration(a.heartbeat_age_ms / 1000)
        )
        row: list[Any] = [
            a.id, a.type, a.role, a.status, a.current_task or "-", heartbeat,
            f"{a.tasks_done}/{a.tasks_failed}",
        ]  # fmt: skip
        if verbose:
            row += [a.host or "-", a.pid or "-", a.restarts, ",".join(a.capabilities) or "-"]
        rows.append(row)
    return table(headers, rows, **table_opts)


def agent_info(agent: AgentInfo) -> str:
    """``cfnctl agent status``."""
    pairs: list[tuple[str, Any]] = [
        ("agent", agent.id),
        ("swarm", agent.swarm),
        ("type", agent.type),
        ("role", agent.role),
        ("status", agent.status),
        ("current task", agent.current_task or "-"),
        ("heartbeat", _age_text(agent.heartbeat_age_ms)),
        ("tasks done", agent.tasks_done),
        ("tasks failed", agent.tasks_failed),
        ("capabilities", ", ".join(agent.capabilities) or "-"),
        ("host", f"{agent.host or '-'}{'' if agent.local else ' (remote)'}"),
        ("pid", agent.pid if agent.pid is not None else "-"),
        ("parent", agent.parent or "-"),
        ("started", format_time(agent.started_ms)),
        ("restarts", agent.restarts),
    ]
    return fields(pairs)


def _age_text(ms: int | None) -> str:
    return "-" if ms is None else f"{format_duration(ms / 1000)} ago"


def agent_change(agent: AgentInfo, action: str, requested: str | None = None) -> str:
    """One line after terminate/restart/reset: ``agent a1 (shell) terminated; now draining``.

    ``requested``: the id asked for, when the answer may be another agent (a restart's).
    """
    if requested is not None and requested != agent.id:
        return f"agent {requested} {action} as {agent.id} ({agent.type}); now {agent.status}"
    return f"agent {agent.id} ({agent.type}) {action}; now {agent.status}"


def swarm_scale(result: SwarmScaleResult) -> str:
    """``cfnctl swarm scale``."""
    if not result.spawned and not result.stopping:
        return f"swarm {result.swarm}: already at that size"
    parts = []
    if result.spawned:
        parts.append(f"spawned {len(result.spawned)} ({', '.join(result.spawned)})")
    if result.stopping:
        parts.append(f"stopping {len(result.stopping)} ({', '.join(result.stopping)})")
    return f"swarm {result.swarm}: " + "; ".join(parts)


def swarm_destroy(result: SwarmDestroyResult, action: str = "destroyed") -> str:
    """``cfnctl swarm destroy`` / ``swarm reset``."""
    stopped = result.stopped_agents
    what = f"stopped {len(stopped)} agent(s): {', '.join(stopped)}" if stopped else "no agents"
    return f"swarm {result.swarm} {action}; {what}"


def delivery_paths(result: DeliveriesResult) -> str:
    """One line per delivery: ``a1 -> hub -> a3``."""
    return "\n".join(" -> ".join(d.path) if d.path else d.to for d in result.deliveries)


def broadcast(result: DeliveriesResult) -> str:
    """``cfnctl swarm broadcast``: a count, then each delivery's path."""
    n = len(result.deliveries)
    if not n:
        return f"message {result.message_id}: no agent to deliver to"
    return f"message {result.message_id} delivered to {n} agent(s):\n" + delivery_paths(result)
