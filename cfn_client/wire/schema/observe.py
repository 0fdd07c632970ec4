"""Schemas of the observability ops: per-agent performance (``metrics.agents``)."""

from __future__ import annotations

from cfn_client.wire.protocol import Args, Result


class MetricsArgs(Args, kw_only=True):
    swarm: str | None = None
    agent: str | None = None  # one agent (with its recent executions)


class Execution(Result, kw_only=True):
    ts_ms: int
    type: str
    task: str
    duration_ms: float
    ok: bool


class TypePerf(Result, kw_only=True):
    executions: int
    success_rate: float
    mean_ms: float


class AgentPerf(Result, kw_only=True):
    """An agent's last executions (at most 1,000): counts and durations."""

    swarm: str
    agent: str
    executions: int = 0
    successes: int = 0
    success_rate: float = 0.0
    mean_ms: float = 0.0
    min_ms: float = 0.0
    max_ms: float = 0.0
    p95_ms: float = 0.0
    by_type: dict[str, TypePerf] = {}
    recent: list[Execution] = []


class MetricsResult(Result, kw_only=True):
    agents: list[AgentPerf]
