"""The CFN loop of one run as a pure, deterministic state machine (no I/O, no asyncio).

``step(state, event) -> (state, effects)``. The runner persists the new state and
the event atomically, then executes the effects; after a crash it replays the
event log from the initial state. ``step`` never raises (for states it produced
or decoded from them, and events of the declared types or any other object) and
never reads clocks or randomness, so a replay reproduces the same states and
effects. Persist with ``msgspec.json``; a non-finite float becomes ``null`` and
is treated exactly like a missing value, so a JSON log replays identically.

Statuses: ``new`` (before ``Start``), ``loop3``, ``loop2``, ``loop4``,
``escalated`` (waiting for a human; not terminal) and the terminal ``done``,
``cancelled``, ``failed``. The confidence gate is decided inside the step that
receives the last implementer result, so no state ever rests "at the gate".

Counting. ``loop2_round`` is the 1-based number of the Loop 2 round in progress
(0 before ``Start``); a round begins with Loop 3 iteration 1, so every round
re-runs Loop 3 from iteration 1. ``loop3_iteration`` is 1-based *within the
round*: each round allows at most ``max_loop3`` Loop 3 executions, i.e. the gate
may fail ``max_loop3`` times per round before escalation. At most ``max_loop2``
rounds run; ``limits.max_loop2`` is the live budget (raised by ``Extend`` and by
``HumanRejected``), so ``loop2_round <= limits.max_loop2`` always holds.

Events and what they do (any event not listed for the current status is
refused: the state is returned unchanged with one ``Rejected`` effect; ``seq``
counts accepted events only):

- ``Start`` (new): round 1, iteration 1 → ``RunImplementers`` (all implementers).
- ``ImplementerDone`` (loop3; from a pending implementer; ``round``/``iteration``,
  when given, must be the current ones, else the result is stale): records the
  result. A failed run (``ok`` false), a missing or non-finite confidence, or one
  outside [0, 1] counts as confidence 0 and the note says why. When nobody is
  pending the gate runs: pass ⇔ every confidence ≥ ``gate_threshold`` and their
  mean ≥ ``gate_mean``. Pass → loop2, ``RunValidators`` with the outputs of all
  implementers in ``implementers`` order (``## <agent> (confidence c)`` headers).
  Fail → ``feedback`` becomes the gate reasons (per agent: confidence, threshold,
  the agent's own reason; the mean if too low) followed by the feedback the round
  began with; then the next iteration, or, after ``max_loop3`` iterations in the
  round, escalation "gate failed N times in round R".
- ``ValidatorsClosed`` (loop2; optional ``round`` must match). It counts as passed
  only if ``passed`` and neither ``no_quorum`` nor ``all_failed`` (a
  contradictory report fails safe). Passed → loop4: ``AskOwner``; with no owner
  the built-in rule decides in the same step: PROCEED (done) if the score is
  finite and ≥ ``consensus_threshold``, else ESCALATE. Not passed: ``no_quorum``
  or ``all_failed`` escalates at once ("consensus-failure → escalate-to-human");
  otherwise the validators' feedback starts round R+1 if R < ``max_loop2``, else
  escalation "consensus failed in R rounds".
- ``OwnerDecided`` (loop4): PROCEED → done; DEFER → done with ``backlog``;
  ESCALATE → escalated.
- ``HumanApproved`` (escalated): done, decision PROCEED.
- ``HumanRejected`` (escalated): starts round R+1 with the human's feedback; if
  R+1 exceeds ``max_loop2`` the budget is raised to R+1, i.e. a rejection always
  grants exactly the one round it starts (refused at the hard cap of 100).
- ``Extend(max_loop2=N)`` (any non-terminal status; N must exceed the current
  budget and be ≤ 100): raises the budget. In ``escalated`` it also starts round
  R+1 with the current ``feedback`` (the text that would feed the next Loop 3);
  elsewhere the run just continues with the larger budget.
- ``Cancel`` / ``Fail`` (any non-terminal status, ``escalated`` included):
  cancelled / failed. ``Fail`` is how the runner reports an internal error.

Every transition to done/cancelled/failed emits one ``Finished``; every
transition to escalated emits one ``Escalate``. ``history`` gets one entry per
gate, consensus round, owner decision and human action. ``pending`` lists the
implementers yet to report (loop3), the validators (loop2), the owner (loop4);
it is empty otherwise. ``results`` holds the current iteration's results.
"""

from __future__ import annotations

import math
from typing import Literal, TypeAlias

import msgspec
from msgspec.structs import replace

__all__ = [
    "TERMINAL",
    "AskOwner",
    "Cancel",
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
    "ValidatorsClosed",
    "step",
]

Status = Literal["new", "loop3", "loop2", "loop4", "done", "escalated", "cancelled", "failed"]
Decision = Literal["PROCEED", "DEFER", "ESCALATE"]
TERMINAL: frozenset[str] = frozenset({"done", "cancelled", "failed"})
MAX_LIMIT = 100
CONSENSUS_FAILURE = "consensus-failure → escalate-to-human"


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


class ValidatorsClosed(_Event, frozen=True):
    passed: bool
    score: float | None
    no_quorum: bool
    all_failed: bool
    feedback: str
    summary: str
    round: int | None = None


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


class Cancel(_Event, frozen=True):
    reason: str = ""


class Fail(_Event, frozen=True):
    reason: str


LoopEvent: TypeAlias = (
    Start
    | ImplementerDone
    | ValidatorsClosed
    | OwnerDecided
    | HumanApproved
    | HumanRejected
    | Extend
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


Effect: TypeAlias = RunImplementers | RunValidators | AskOwner | Escalate | Finished | Rejected
Step: TypeAlias = tuple[RunState, list[Effect]]

# ---------------------------------------------------------------- transitions


def step(state: RunState, event: LoopEvent) -> Step:
    """Apply ``event``; see the module docstring for the exact semantics."""
    status = state.status
    if status in TERMINAL:
        return _reject(state, event, f"the run is already {status}")
    match event:
        case Cancel(reason=reason):
            return _finish(state, "cancelled", state.decision, reason or "cancelled")
        case Fail(reason=reason):
            return _finish(state, "failed", state.decision, reason or "failed")
        case Extend(max_loop2=n):
            return _extend(state, event, n)
        case Start() if status == "new":
            return _loop3(state, round=1, feedback="")
        case ImplementerDone() if status == "loop3":
            return _implementer_done(state, event)
        case ValidatorsClosed() if status == "loop2":
            return _validators_closed(state, event)
        case OwnerDecided() if status == "loop4":
            return _owner_decided(state, event)
        case HumanApproved(reason=reason) if status == "escalated":
            state = _record(state, "human", "approved")
            return _finish(state, "done", "PROCEED", reason or "approved by a human")
        case HumanRejected(feedback=feedback) if status == "escalated":
            nxt = state.loop2_round + 1
            if nxt > MAX_LIMIT:
                return _reject(state, event, f"no round left under the hard cap of {MAX_LIMIT}")
            limits = replace(state.limits, max_loop2=max(state.limits.max_loop2, nxt))
            state = _record(replace(state, limits=limits), "human", "rejected")
            return _loop3(state, round=nxt, feedback=feedback)
        case _:
            return _reject(state, event, f"not applicable while the run is {status}")


def _extend(state: RunState, event: Extend, n: object) -> Step:
    current = state.limits.max_loop2
    if type(n) is not int or not current < n <= MAX_LIMIT:
        return _reject(state, event, f"max_loop2 must be in {current + 1}..{MAX_LIMIT}, got {n!r}")
    state = replace(state, limits=replace(state.limits, max_loop2=n))
    if state.status != "escalated":
        return _accept(state), []
    state = _record(state, "human", f"extended to {n} rounds")
    return _loop3(state, round=state.loop2_round + 1, feedback=state.feedback)


def _implementer_done(state: RunState, event: ImplementerDone) -> Step:
    rnd, it, agent = state.loop2_round, state.loop3_iteration, event.agent
    if (event.round is not None and event.round != rnd) or (
        event.iteration is not None and event.iteration != it
    ):
        return _reject(
            state,
            event,
            f"stale result for round {event.round} iteration {event.iteration}; "
            f"current is round {rnd} iteration {it}",
        )
    if agent not in state.implementers:
        return _reject(state, event, f"{agent!r} is not an implementer of this run")
    if agent not in state.pending:
        return _reject(state, event, f"{agent!r} already reported for round {rnd} iteration {it}")
    confidence, note = _effective_confidence(event)
    result = ImplResult(confidence=confidence, output=event.output, ok=event.ok, note=note)
    state = replace(
        state,
        pending=[a for a in state.pending if a != agent],
        results={**state.results, agent: result},
    )
    return _gate(state) if not state.pending else (_accept(state), [])


def _effective_confidence(event: ImplementerDone) -> tuple[float, str]:
    value, reason = _finite(event.confidence), event.reason
    suffix = f": {reason}" if reason else ""
    if not event.ok:
        return 0.0, f"the implementer failed{suffix}; counted as confidence 0"
    if value is None:
        return 0.0, f"no valid confidence reported{suffix}; counted as 0"
    if not 0.0 <= value <= 1.0:
        return 0.0, f"confidence {value:g} outside [0, 1]{suffix}; counted as 0"
    return value, reason


def _gate(state: RunState) -> Step:
    limits, rnd, it = state.limits, state.loop2_round, state.loop3_iteration
    agents = state.implementers
    scores = [state.results[a].confidence for a in agents]
    mean, low = sum(scores) / len(scores), min(scores)
    reasons = []
    for agent in agents:
        res = state.results[agent]
        if res.confidence < limits.gate_threshold:
            why = f" ({res.note})" if res.note else ""
            reasons.append(
                f"- {agent}: confidence {res.confidence:g} < gate threshold "
                f"{limits.gate_threshold:g}{why}"
            )
    if mean < limits.gate_mean:
        reasons.append(f"- mean confidence {mean:g} < required mean {limits.gate_mean:g}")
    outcome = "gate-failed" if reasons else "gate-passed"
    state = _record(state, "loop3", outcome, score=mean, low=low)
    if not reasons:
        combined = "\n\n".join(
            f"## {a} (confidence {state.results[a].confidence:g})\n{state.results[a].output}"
            for a in agents
        )
        state = replace(state, status="loop2", pending=list(state.validators))
        effect = RunValidators(agents=list(state.validators), round=rnd, combined_output=combined)
        return _accept(state), [effect]
    feedback = f"Loop 3 iteration {it} of round {rnd} failed the confidence gate:\n" + "\n".join(
        reasons
    )
    if state.round_feedback:
        feedback += f"\n\nFeedback this round started with:\n{state.round_feedback}"
    if it < limits.max_loop3:
        return _loop3(state, round=rnd, feedback=feedback, iteration=it + 1)
    return _escalate(state, f"gate failed {it} times in round {rnd}", feedback=feedback)


def _validators_closed(state: RunState, event: ValidatorsClosed) -> Step:
    rnd = state.loop2_round
    if event.round is not None and event.round != rnd:
        return _reject(state, event, f"stale consensus result for round {event.round}; now {rnd}")
    score = _finite(event.score)
    if event.passed and not (event.no_quorum or event.all_failed):
        state = _record(state, "loop2", "consensus-passed", score=score)
        if state.owner is not None:
            summary = f"Round {rnd}: consensus passed (score {_fmt(score)}).\n{event.summary}"
            owner = state.owner
            state = replace(state, status="loop4", pending=[owner])
            return _accept(state), [AskOwner(owner=owner, round=rnd, summary=summary)]
        threshold = state.limits.consensus_threshold
        if score is not None and score >= threshold:
            why = f"built-in owner rule: score {score:g} >= threshold {threshold:g}"
            state = _record(state, "loop4", "PROCEED", score=score)
            return _finish(state, "done", "PROCEED", why)
        why = f"built-in owner rule: score {_fmt(score)} below threshold {threshold:g}"
        state = _record(replace(state, decision="ESCALATE"), "loop4", "ESCALATE", score=score)
        return _escalate(state, why, feedback=state.feedback)
    feedback = f"Loop 2 round {rnd}: the validators rejected the result (score {_fmt(score)}).\n"
    feedback += event.feedback
    if event.no_quorum or event.all_failed:
        what = "no quorum" if event.no_quorum else "every validator failed"
        state = _record(state, "loop2", "no-quorum" if event.no_quorum else "all-failed", score)
        return _escalate(state, f"{CONSENSUS_FAILURE}: {what} in round {rnd}", feedback=feedback)
    state = _record(state, "loop2", "consensus-failed", score=score)
    if rnd < state.limits.max_loop2:
        return _loop3(state, round=rnd + 1, feedback=feedback)
    return _escalate(state, f"consensus failed in {rnd} rounds", feedback=feedback)


def _owner_decided(state: RunState, event: OwnerDecided) -> Step:
    decision = event.decision
    if decision not in ("PROCEED", "DEFER", "ESCALATE"):
        return _reject(state, event, f"unknown decision {decision!r}")
    state = _record(state, "loop4", decision)
    reason = event.reason or f"owner {state.owner} decided {decision}"
    if decision == "ESCALATE":
        return _escalate(replace(state, decision="ESCALATE"), reason, feedback=state.feedback)
    if decision == "DEFER":
        state = replace(state, backlog=list(event.backlog))
    return _finish(state, "done", decision, reason)


# -------------------------------------------------------------------- helpers


def _accept(state: RunState) -> RunState:
    return replace(state, seq=state.seq + 1)


def _reject(state: RunState, event: object, reason: str) -> Step:
    return state, [Rejected(event=type(event).__name__, reason=reason)]


def _record(
    state: RunState,
    kind: Literal["loop3", "loop2", "loop4", "human"],
    outcome: str,
    score: float | None = None,
    low: float | None = None,
) -> RunState:
    entry = HistoryEntry(
        kind=kind,
        round=state.loop2_round,
        iteration=state.loop3_iteration,
        outcome=outcome,
        score=score,
        low=low,
    )
    return replace(state, history=[*state.history, entry])


def _loop3(state: RunState, *, round: int, feedback: str, iteration: int = 1) -> Step:
    """Start Loop 3 ``iteration`` of ``round``; iteration 1 begins a new round."""
    state = replace(
        state,
        status="loop3",
        loop2_round=round,
        loop3_iteration=iteration,
        pending=list(state.implementers),
        results={},
        feedback=feedback,
        round_feedback=feedback if iteration == 1 else state.round_feedback,
        decision=None,
    )
    effect = RunImplementers(
        agents=list(state.implementers), iteration=iteration, round=round, feedback=feedback
    )
    return _accept(state), [effect]


def _escalate(state: RunState, reason: str, *, feedback: str) -> Step:
    state = replace(state, status="escalated", pending=[], outcome_reason=reason, feedback=feedback)
    return _accept(state), [Escalate(reason=reason)]


def _finish(state: RunState, status: Status, decision: Decision | None, reason: str) -> Step:
    state = replace(state, status=status, decision=decision, pending=[], outcome_reason=reason)
    return _accept(state), [Finished(status=status, decision=decision, reason=reason)]


def _finite(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _fmt(score: float | None) -> str:
    return "n/a" if score is None else f"{score:g}"
