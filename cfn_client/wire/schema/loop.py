"""Wire schemas of CFN loop runs (Loop 3 implementers, Loop 2 validators, Loop 4 owner)."""

from __future__ import annotations

from typing import Any, Literal

from cfn_client.wire.protocol import Result
from cfn_client.wire.schema.swarm import SwarmArgs

DEFAULT_IMPLEMENTERS = ("coder", "coder")
DEFAULT_VALIDATORS = ("reviewer", "tester", "security-specialist")
Complexity = Literal["simple", "medium", "complex", "enterprise"]
# Agents of a run when none are listed: (implementer types, validator types).
SIZING: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "simple": (("coder",), ("reviewer", "tester")),
    "medium": (("coder", "coder"), ("reviewer", "tester", "security-specialist", "reviewer")),
    "complex": (
        ("coder",) * 3,
        (
            "reviewer",
            "tester",
            "security-specialist",
            "architect",
            "reviewer",
            "tester",
            "security-specialist",
        ),
    ),
    "enterprise": (
        ("coder",) * 5,
        (
            "reviewer",
            "tester",
            "security-specialist",
            "architect",
            "reviewer",
            "tester",
            "security-specialist",
            "architect",
            "reviewer",
            "tester",
        ),
    ),
}


class RunInfo(Result, kw_only=True):
    """One CFN run as cfnd sees it (its state machine plus round details)."""

    id: str
    swarm: str
    task: str
    status: str  # new loop3 loop2 loop4 escalated done cancelled failed
    phase: str | None = None
    loop2_round: int = 0
    loop3_iteration: int = 0
    max_loop2: int = 10
    max_loop3: int = 10
    implementers: list[str] = []
    validators: list[str] = []
    owner: str | None = None
    pending: list[str] = []
    decision: str | None = None
    outcome_reason: str = ""
    feedback: str = ""
    backlog: list[str] = []
    history: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []  # consensus outcome per Loop 2 round
    created_ms: int = 0
    updated_ms: int = 0


class LoopStartArgs(SwarmArgs, kw_only=True):
    """Empty ``implementers``/``validators`` are sized by ``complexity`` (default
    medium: 2 coders, 4 validators; see SIZING)."""

    task: str
    phase: str | None = None
    implementers: list[str] = []
    validators: list[str] = []
    complexity: Complexity | None = None
    owner: str | None = None  # an agent type (e.g. product-owner); None: built-in rule
    max_loop2: int | None = None
    max_loop3: int | None = None


class LoopRefArgs(SwarmArgs, kw_only=True):
    run: str


class LoopListArgs(SwarmArgs, kw_only=True):
    status: str | None = None
    limit: int = 100


class LoopRejectArgs(LoopRefArgs, kw_only=True):
    feedback: str = ""


class LoopApproveArgs(LoopRefArgs, kw_only=True):
    reason: str = ""


class LoopExtendArgs(LoopRefArgs, kw_only=True):
    max_loop2: int


class LoopCancelArgs(LoopRefArgs, kw_only=True):
    reason: str = ""


class LoopFollowArgs(LoopRefArgs, kw_only=True):
    pass


class LoopListResult(Result, kw_only=True):
    runs: list[RunInfo]


class LoopBacklogResult(Result, kw_only=True):
    run: str
    items: list[str]


__all__ = [
    "LoopApproveArgs",
    "LoopBacklogResult",
    "LoopCancelArgs",
    "LoopExtendArgs",
    "LoopFollowArgs",
    "LoopListArgs",
    "LoopListResult",
    "LoopRefArgs",
    "LoopRejectArgs",
    "LoopStartArgs",
    "RunInfo",
]
