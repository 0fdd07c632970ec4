"""Epics: phases of CFN runs in dependency order (Loop 1), as sent over the wire.

An epic file (TOML, JSON or YAML) names phases; each phase becomes one CFN run::

    name = "auth"
    [[phases]]
    name = "design"
    [[phases]]
    name = "backend"
    depends_on = ["design"]
    parallel = true
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from cfn_client.wire.protocol import Result
from cfn_client.wire.schema.loop import Complexity
from cfn_client.wire.schema.swarm import SwarmArgs


class PhaseSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    description: str = ""
    implementers: list[str] = []  # empty: sized by complexity
    validators: list[str] = []
    complexity: Complexity | None = None
    owner: str | None = None
    depends_on: list[str] = []
    parallel: bool = False
    max_loop2: int | None = None
    max_loop3: int | None = None
    # Sprint checkpoint: after the run, its last gate's mean confidence must reach
    # min_confidence and every command in checks must exit 0 (run as shell tasks).
    min_confidence: float | None = None
    checks: list[str] = []
    # Workspaces: the phase's run works on this repository (default: the epic's); with
    # a repository the phase's checks are also the run's evidence checks.
    repo: str | None = None
    base: str | None = None
    mode: Literal["mvp", "standard", "enterprise"] | None = None
    budget_usd: float | None = None


class EpicSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    description: str = ""
    phases: list[PhaseSpec]
    repo: str | None = None
    base: str | None = None


class EpicStartArgs(SwarmArgs, kw_only=True):
    epic: EpicSpec


class EpicRefArgs(SwarmArgs, kw_only=True):
    epic_id: str


class EpicListArgs(SwarmArgs, kw_only=True):
    pass


class PhaseInfo(Result, kw_only=True):
    name: str
    status: str  # waiting, running, checking, done, escalated, failed, cancelled
    run: str | None = None
    depends_on: list[str] = []
    decision: str | None = None
    checkpoint: str | None = None  # "passed" or "failed: why"
    cost_usd: float = 0.0
    reason: str | None = None  # why a phase that should run cannot start (no agents, ...)


class EpicInfo(Result, kw_only=True):
    id: str
    swarm: str
    name: str
    status: str  # running, done, blocked, failed
    phases: list[PhaseInfo]
    order: list[list[str]]  # the dependency layers
    created_ms: int = 0
    cost_usd: float = 0.0  # the phases' runs together
    reason: str | None = None  # why it is blocked (the first phase that cannot start)


class EpicListResult(Result, kw_only=True):
    epics: list[EpicInfo]


def sprints_spec(
    goal: str, n: int, checks: list[str], min_confidence: float | None
) -> dict[str, Any]:
    """N sprints towards GOAL, one after the other, each with the same checkpoint."""
    return {
        "name": goal[:60],
        "description": goal,
        "phases": [
            {
                "name": f"sprint-{i}",
                "description": f"{goal} (sprint {i} of {n})",
                "checks": list(checks),
                "min_confidence": min_confidence,
                **({"depends_on": [f"sprint-{i - 1}"]} if i > 1 else {}),
            }
            for i in range(1, n + 1)
        ],
    }


def parse_epic(text: str, name: str) -> dict[str, Any]:
    """Read an epic file's text: YAML (``.yaml``/``.yml``), JSON (starts with ``{``)
    or TOML. Parsers load lazily so cfnctl stays quick to start."""
    data: Any
    if name.endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text)
    elif text.lstrip().startswith("{"):
        data = msgspec.json.decode(text.encode())
    else:
        import tomllib

        data = tomllib.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected a table with `name` and `phases`")
    return data
