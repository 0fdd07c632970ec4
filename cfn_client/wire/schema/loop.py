"""Wire schemas of CFN loop runs (Loop 3 implementers, Loop 2 validators, Loop 4 owner)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from cfn_client.wire.protocol import Result
from cfn_client.wire.schema.swarm import SwarmArgs

DEFAULT_IMPLEMENTERS = ("coder", "coder")
DEFAULT_VALIDATORS = ("reviewer", "tester", "security-specialist")
Complexity = Literal["simple", "medium", "complex", "enterprise"]
Mode = Literal["mvp", "standard", "enterprise"]
ApplyHow = Literal["merge", "squash", "patch"]


class ModePreset(msgspec.Struct, frozen=True, kw_only=True):
    """What ``--mode`` sets; explicit flags win."""

    gate_threshold: float
    consensus_threshold: float
    max_loop3: int
    validators: int


MODES: dict[str, ModePreset] = {
    "mvp": ModePreset(gate_threshold=0.65, consensus_threshold=0.85, max_loop3=5, validators=2),
    "standard": ModePreset(
        gate_threshold=0.75, consensus_threshold=0.90, max_loop3=10, validators=4
    ),
    "enterprise": ModePreset(
        gate_threshold=0.85, consensus_threshold=0.95, max_loop3=15, validators=5
    ),
}
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
    mode: str | None = None
    # Workspaces: the repository worked on, the base commit, the checks every candidate
    # must pass, and (once a candidate passed) the branch and commit holding the result.
    repo: str | None = None
    base: str | None = None
    checks: list[str] = []
    compete: bool = False
    no_change_ok: bool = False
    branch: str | None = None
    commit: str | None = None
    winner: str | None = None
    branches: list[str] = []
    artifacts: dict[str, str] = {}  # name -> file in cfnd's state dir (patches, check logs)
    # Spend reported by the agent CLIs, summed over the run's tasks.
    cost_usd: float = 0.0
    budget_usd: float | None = None
    cost_by_agent: dict[str, float] = {}
    cost_by_round: dict[str, float] = {}
    input_tokens: int = 0
    output_tokens: int = 0


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
    mode: Mode | None = None  # mvp / standard / enterprise presets (see MODES)
    gate_threshold: float | None = None
    consensus_threshold: float | None = None
    # Workspaces: implementers work in git worktrees of ``repo`` branched from ``base``.
    repo: str | None = None
    base: str | None = None
    checks: list[str] = []  # commands every candidate must pass (run as tasks)
    no_change_ok: bool = False  # research/analysis: an empty diff is acceptable evidence
    compete: bool = False  # best-of-n: each implementer's branch is its own candidate
    budget_usd: float | None = None


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


class LoopApplyArgs(LoopRefArgs, kw_only=True):
    """Bring a run's result into the user's current branch of its repository."""

    how: ApplyHow = "merge"
    file: str | None = None  # how = "patch": where to write it
    repo: str | None = None  # default: the run's repository (its main worktree)


class LoopApplyResult(Result, kw_only=True):
    run: str
    how: str
    branch: str
    commit: str
    applied: str | None = None  # the new commit on the user's branch (merge, squash)
    file: str | None = None  # the patch written (patch)


class LoopCleanResult(Result, kw_only=True):
    run: str
    worktrees: list[str] = []
    branches: list[str] = []


class LoopListResult(Result, kw_only=True):
    runs: list[RunInfo]


class LoopBacklogResult(Result, kw_only=True):
    run: str
    items: list[str]


__all__ = [
    "MODES",
    "LoopApplyArgs",
    "LoopApplyResult",
    "LoopApproveArgs",
    "LoopBacklogResult",
    "LoopCancelArgs",
    "LoopCleanResult",
    "LoopExtendArgs",
    "LoopFollowArgs",
    "LoopListArgs",
    "LoopListResult",
    "LoopRefArgs",
    "LoopRejectArgs",
    "LoopStartArgs",
    "RunInfo",
]
