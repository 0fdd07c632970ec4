"""The values of the CFN loop state machine: limits, run state, events and effects.

Pure msgspec Structs (no I/O). :mod:`cfn_daemon.core.loop` documents what every
event does and re-exports these names; import them from there.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

__all__ = [
    "CANDIDATE",
    "CONSENSUS_FAILURE",
    "MAX_LIMIT",
    "TERMINAL",
    "AskOwner",
    "BudgetExhausted",
    "BuildCandidate",
    "Cancel",
    "CandidateReady",
    "Decision",
    "Effect",
    "Escalate",
    "Extend",
    "Fail",
    "Finished",
    "HistoryEntry",
    "HumanApproved",
    "HumanRejected",
    "ImplResult",
    "ImplementerDone",
    "LoopEvent",
    "LoopLimits",
    "OwnerDecided",
    "Rejected",
    "RunImplementers",
    "RunState",
    "RunValidators",
    "Start",
    "Status",
    "Step",
    "ValidatorsClosed",
]

Status = Literal["new", "loop3", "loop2", "loop4", "done", "escalated", "cancelled", "failed"]
Decision = Literal["PROCEED", "DEFER", "ESCALATE", "ITERATE", "ABORT"]
TERMINAL: frozenset[str] = frozenset({"done", "cancelled", "failed"})
MAX_LIMIT = 100
CONSENSUS_FAILURE = "consensus-failure → escalate-to-human"
CANDIDATE = "candidate"  # what ``pending`` holds while the candidate is built and checked


class LoopLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Gate and budget settings (same names as ``[loop]`` in the config)."""

    gate_threshold: float = 0.75
    gate_mean: float = 0.80
    consensus_threshold: float = 0.90
    max_loop3: int = 10
    max_loop2: int = 10

    def __post_init__(self) -> None:
        for name in ("gate_threshold", "gate_mean", "consensus_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}")
        for name in ("max_loop3", "max_loop2"):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= MAX_LIMIT:
                raise ValueError(f"`{name}` must be an integer in 1..{MAX_LIMIT}, got {value!r}")


class ImplResult(msgspec.Struct, frozen=True, kw_only=True):
    """One implementer's result; ``confidence`` is the effective one (0 when invalid)."""

    confidence: float
    output: str
    ok: bool
    note: str = ""


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    """Compact record of one gate / consensus round / owner decision / human action.

    ``score``: the mean confidence (loop3) or consensus score (loop2); ``low``: the
    lowest confidence (loop3).
    """

    kind: Literal["loop3", "loop2", "loop4", "human"]
    round: int
    iteration: int
    outcome: str
    score: float | None = None
    low: float | None = None


class RunState(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything about one run; JSON-serialisable with ``msgspec.json``."""

    run_id: str
    task: str
    implementers: list[str]
    validators: list[str]
    owner: str | None = None
    phase: str | None = None
    limits: LoopLimits = msgspec.field(default_factory=LoopLimits)
    workspace: bool = False  # the run works on a git repo: evidence and a candidate step
    no_change_ok: bool = False  # an empty diff is acceptable evidence
    compete: bool = False  # each implementer's branch is its own candidate
    budget_usd: float | None = None  # informational: the runner sends BudgetExhausted
    status: Status = "new"
    loop2_round: int = 0
    loop3_iteration: int = 0
    pending: list[str] = msgspec.field(default_factory=list)
    results: dict[str, ImplResult] = msgspec.field(default_factory=dict)
    feedback: str = ""
    round_feedback: str = ""  # the feedback the current round began with
    history: list[HistoryEntry] = msgspec.field(default_factory=list)
    decision: Decision | None = None
    backlog: list[str] = msgspec.field(default_factory=list)
    outcome_reason: str = ""
    head: str | None = None  # commit of the latest candidate that passed the gate
    winner: str | None = None  # the candidate the validators chose (compete or "candidate")
    seq: int = 0

    def __post_init__(self) -> None:
        for name in ("implementers", "validators"):
            ids = getattr(self, name)
            if not ids or len(set(ids)) != len(ids) or not all(ids):
                raise ValueError(f"`{name}` must be a non-empty list of distinct agent ids")


# --------------------------------------------------------------------- events


class _Event(msgspec.Struct, frozen=True, tag=True, forbid_unknown_fields=True):
    pass


class Start(_Event, frozen=True):
    pass


class ImplementerDone(_Event, frozen=True):
    agent: str
    confidence: float | None
    output: str
    ok: bool
    reason: str = ""
    round: int | None = None  # when set, must match the current round/iteration
    iteration: int | None = None
    changed_files: int | None = None  # files the implementer changed (workspace runs)


class CandidateReady(_Event, frozen=True):
    """The candidate step's outcome: the merged/best candidate built and its checks run."""

    ok: bool
    head: str | None = None
    candidates: dict[str, str] = msgspec.field(default_factory=dict)  # compete: agent -> commit
    feedback: str = ""
    summary: str = ""
    round: int | None = None  # when set, must match the current round/iteration
    iteration: int | None = None


class ValidatorsClosed(_Event, frozen=True):
    passed: bool
    score: float | None
    no_quorum: bool
    all_failed: bool
    feedback: str
    summary: str
    round: int | None = None
    winner: str | None = None


class OwnerDecided(_Event, frozen=True):
    decision: Decision
    reason: str
    backlog: list[str] = msgspec.field(default_factory=list)


class HumanApproved(_Event, frozen=True):
    reason: str = ""


class HumanRejected(_Event, frozen=True):
    feedback: str


class Extend(_Event, frozen=True):
    max_loop2: int


class BudgetExhausted(_Event, frozen=True):
    spent_usd: float
    budget_usd: float


class Cancel(_Event, frozen=True):
    reason: str = ""


class Fail(_Event, frozen=True):
    reason: str


LoopEvent: TypeAlias = (
    Start
    | ImplementerDone
    | CandidateReady
    | ValidatorsClosed
    | OwnerDecided
    | HumanApproved
    | HumanRejected
    | Extend
    | BudgetExhausted
    | Cancel
    | Fail
)

# -------------------------------------------------------------------- effects


class _Effect(msgspec.Struct, frozen=True, tag=True):
    pass


class RunImplementers(_Effect, frozen=True):
    """Loop 3: run the task on all ``agents`` in parallel."""

    agents: list[str]
    iteration: int
    round: int
    feedback: str


class BuildCandidate(_Effect, frozen=True):
    """Workspace runs: build the candidate(s) from ``agents``' work and run the checks."""

    round: int
    iteration: int
    agents: list[str]


class RunValidators(_Effect, frozen=True):
    """Loop 2: open consensus round ``round`` over ``combined_output``."""

    agents: list[str]
    round: int
    combined_output: str


class AskOwner(_Effect, frozen=True):
    owner: str
    round: int
    summary: str


class Escalate(_Effect, frozen=True):
    reason: str


class Finished(_Effect, frozen=True):
    status: Status
    decision: Decision | None
    reason: str


class Rejected(_Effect, frozen=True):
    """``event`` is the refused event's type name."""

    event: str
    reason: str


Effect: TypeAlias = (
    RunImplementers | BuildCandidate | RunValidators | AskOwner | Escalate | Finished | Rejected
)
Step: TypeAlias = tuple[RunState, list[Effect]]
