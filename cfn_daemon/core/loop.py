"""The CFN loop of one run as a pure, deterministic state machine (no I/O, no asyncio).

``step(state, event) -> (state, effects)``. The runner persists the new state and
the event atomically, then executes the effects; after a crash it replays the
event log from the initial state. ``step`` never raises (for states it produced
or decoded from them, and events of the declared types or any other object) and
never reads clocks or randomness, so a replay reproduces the same states and
effects. Persist with ``msgspec.json``; a non-finite float becomes ``null`` and
is treated exactly like a missing value, so a JSON log replays identically. The
Structs live in :mod:`cfn_daemon.core.loop_model`; this module re-exports them.

Statuses: ``new`` (before ``Start``), ``loop3``, ``loop2``, ``loop4``,
``escalated`` (waiting for a human; not terminal) and the terminal ``done``,
``cancelled``, ``failed``. The confidence gate is decided inside the step that
receives the last implementer result, so no state ever rests "at the gate". In a
``workspace`` run a passed confidence gate is followed by the *candidate step*:
the run stays in ``loop3`` with ``pending == ["candidate"]`` until
``CandidateReady`` (the evidence gate) arrives.

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
  outside [0, 1] counts as confidence 0 and the note says why; so does, in a
  ``workspace`` run without ``no_change_ok``, a valid confidence c with
  ``changed_files`` 0 or missing (note ``claimed c, changed 0 files``; elsewhere
  ``changed_files`` is ignored). When nobody is pending the confidence gate runs:
  pass ⇔ every confidence ≥ ``gate_threshold`` and their mean ≥ ``gate_mean``.
  Pass → loop2, ``RunValidators`` with the outputs of all implementers in
  ``implementers`` order (``## <agent> (confidence c)`` headers); in a workspace
  run ``BuildCandidate`` instead (see ``CandidateReady``). Fail → ``feedback`` is
  "Loop 3 iteration I of round R failed the confidence gate:" and the reasons (per
  agent: confidence, threshold, note; the mean if too low), then the feedback the
  round began with; the next iteration follows, or, after ``max_loop3`` iterations
  in the round, escalation "gate failed N times in round R".
- ``CandidateReady`` (loop3 of a workspace run, ``pending == ["candidate"]``;
  ``round``/``iteration`` checked like ``ImplementerDone``). ``ok`` → history
  "gate-passed" (score = mean confidence, low = the lowest), ``head`` stored, then
  loop2 with ``RunValidators`` whose output is the implementers' section, plus
  "\\n\\n" and ``summary`` when that is non-empty. Not ok → history "gate-failed";
  ``feedback`` becomes "Loop 3 iteration I of round R failed the evidence gate:"
  and the event's ``feedback`` (plus the round's starting feedback, as above); then
  the next iteration or escalation exactly like a failed confidence gate. A
  workspace run records exactly one loop3 history entry per iteration.
- ``ValidatorsClosed`` (loop2; optional ``round`` must match); a ``winner`` given
  is stored in ``winner``. It counts as passed only if ``passed`` and neither
  ``no_quorum`` nor ``all_failed`` (a contradictory report fails safe). Passed →
  loop4: ``AskOwner``; with no owner the built-in rule decides in the same step:
  PROCEED (done) if the score is finite and ≥ ``consensus_threshold``, else
  ESCALATE. Not passed: ``no_quorum`` or ``all_failed`` escalates at once
  ("consensus-failure → escalate-to-human"); otherwise the validators' feedback
  starts round R+1 if R < ``max_loop2``, else escalation "consensus failed in R
  rounds".
- ``OwnerDecided`` (loop4): PROCEED → done; DEFER → done with ``backlog``;
  ESCALATE → escalated; ABORT → failed, decision ABORT, reason the owner's or
  "aborted by the owner"; ITERATE → round R+1 with feedback "The product owner
  asked for another iteration: <reason>" and one "- item" line per backlog item,
  or, if R+1 > ``max_loop2``, escalation "owner asked to iterate, but all N rounds
  are spent" (with that feedback kept for ``Extend``/``HumanRejected``).
- ``HumanApproved`` (escalated): done, decision PROCEED.
- ``HumanRejected`` (escalated): starts round R+1 with the human's feedback; if
  R+1 exceeds ``max_loop2`` the budget is raised to R+1, i.e. a rejection always
  grants exactly the one round it starts (refused at the hard cap of 100).
- ``Extend(max_loop2=N)`` (any non-terminal status; N must exceed the current
  budget and be ≤ 100): raises the budget. In ``escalated`` it also starts round
  R+1 with the current ``feedback`` (the text that would feed the next Loop 3);
  elsewhere the run just continues with the larger budget.
- ``BudgetExhausted(spent_usd, budget_usd)`` (loop3, loop2, loop4): escalated,
  reason "budget exhausted: $S of $B" (2 decimals), ``feedback`` kept. The runner
  decides when money ran out; the machine does not compare the numbers.
- ``Cancel`` / ``Fail`` (any non-terminal status, ``escalated`` included):
  cancelled / failed. ``Fail`` is how the runner reports an internal error.

Every transition to done/cancelled/failed emits one ``Finished``; every
transition to escalated emits one ``Escalate``. ``history`` gets one entry per
gate, consensus round, owner decision and human action. ``pending`` lists the
implementers yet to report (loop3), ``["candidate"]`` (the candidate step), the
validators (loop2), the owner (loop4); it is empty otherwise. ``results`` holds
the current iteration's results; ``head`` and ``winner`` the latest ones given.
"""

from __future__ import annotations

import math
from typing import Literal

from msgspec.structs import replace

from cfn_daemon.core.loop_model import (
    CANDIDATE,
    CONSENSUS_FAILURE,
    MAX_LIMIT,
    TERMINAL,
    AskOwner,
    BudgetExhausted,
    BuildCandidate,
    Cancel,
    CandidateReady,
    Decision,
    Effect,
    Escalate,
    Extend,
    Fail,
    Finished,
    HistoryEntry,
    HumanApproved,
    HumanRejected,
    ImplementerDone,
    ImplResult,
    LoopEvent,
    LoopLimits,
    OwnerDecided,
    Rejected,
    RunImplementers,
    RunState,
    RunValidators,
    Start,
    Status,
    Step,
    ValidatorsClosed,
)

# fmt: off
__all__ = [
    "CANDIDATE", "CONSENSUS_FAILURE", "MAX_LIMIT", "TERMINAL", "AskOwner", "BudgetExhausted",
    "BuildCandidate", "Cancel", "CandidateReady", "Decision", "Effect", "Escalate", "Extend",
    "Fail", "Finished", "HistoryEntry", "HumanApproved", "HumanRejected", "ImplResult",
    "ImplementerDone", "LoopEvent", "LoopLimits", "OwnerDecided", "Rejected", "RunImplementers",
    "RunState", "RunValidators", "Start", "Status", "Step", "ValidatorsClosed", "step",
]
# fmt: on

_DECISIONS: frozenset[str] = frozenset({"PROCEED", "DEFER", "ESCALATE", "ITERATE", "ABORT"})
_RUNNING: frozenset[str] = frozenset({"loop3", "loop2", "loop4"})  # BudgetExhausted applies

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
        case BudgetExhausted(spent_usd=spent, budget_usd=budget) if status in _RUNNING:
            reason = f"budget exhausted: ${spent:.2f} of ${budget:.2f}"
            return _escalate(state, reason, feedback=state.feedback)
        case Start() if status == "new":
            return _loop3(state, round=1, feedback="")
        case ImplementerDone() if status == "loop3":
            return _implementer_done(state, event)
        case CandidateReady() if status == "loop3":
            return _candidate_ready(state, event)
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


def _stale(state: RunState, rnd: int | None, it: int | None) -> str | None:
    """Why a result stamped ``rnd``/``it`` is not for the current iteration, else None."""
    if (rnd is not None and rnd != state.loop2_round) or (
        it is not None and it != state.loop3_iteration
    ):
        return (
            f"stale result for round {rnd} iteration {it}; "
            f"current is round {state.loop2_round} iteration {state.loop3_iteration}"
        )
    return None


def _building(state: RunState) -> bool:
    """Whether the run is in the candidate step (every implementer has reported)."""
    return (
        state.workspace
        and state.pending == [CANDIDATE]
        and len(state.results) == len(state.implementers)
    )


def _implementer_done(state: RunState, event: ImplementerDone) -> Step:
    rnd, it, agent = state.loop2_round, state.loop3_iteration, event.agent
    if (stale := _stale(state, event.round, event.iteration)) is not None:
        return _reject(state, event, stale)
    if agent not in state.implementers:
        return _reject(state, event, f"{agent!r} is not an implementer of this run")
    if agent not in state.pending or _building(state):
        return _reject(state, event, f"{agent!r} already reported for round {rnd} iteration {it}")
    confidence, note = _effective_confidence(state, event)
    result = ImplResult(confidence=confidence, output=event.output, ok=event.ok, note=note)
    state = replace(
        state,
        pending=[a for a in state.pending if a != agent],
        results={**state.results, agent: result},
    )
    return _gate(state) if not state.pending else (_accept(state), [])


def _effective_confidence(state: RunState, event: ImplementerDone) -> tuple[float, str]:
    value, reason = _finite(event.confidence), event.reason
    suffix = f": {reason}" if reason else ""
    if not event.ok:
        return 0.0, f"the implementer failed{suffix}; counted as confidence 0"
    if value is None:
        return 0.0, f"no valid confidence reported{suffix}; counted as 0"
    if not 0.0 <= value <= 1.0:
        return 0.0, f"confidence {value:g} outside [0, 1]{suffix}; counted as 0"
    changed = event.changed_files
    if state.workspace and not state.no_change_ok and not (type(changed) is int and changed > 0):
        return 0.0, f"claimed {value:g}, changed 0 files"
    return value, reason


def _scores(state: RunState) -> tuple[float, float]:
    """Mean and lowest effective confidence of the current iteration."""
    scores = [state.results[a].confidence for a in state.implementers]
    return sum(scores) / len(scores), min(scores)


def _gate(state: RunState) -> Step:
    limits, rnd, it = state.limits, state.loop2_round, state.loop3_iteration
    mean = _scores(state)[0]
    reasons = []
    for agent in state.implementers:
        res = state.results[agent]
        if res.confidence < limits.gate_threshold:
            why = f" ({res.note})" if res.note else ""
            reasons.append(
                f"- {agent}: confidence {res.confidence:g} < gate threshold "
                f"{limits.gate_threshold:g}{why}"
            )
    if mean < limits.gate_mean:
        reasons.append(f"- mean confidence {mean:g} < required mean {limits.gate_mean:g}")
    if reasons:
        header = f"Loop 3 iteration {it} of round {rnd} failed the confidence gate:\n"
        return _gate_failed(state, header + "\n".join(reasons))
    if state.workspace:  # the gate is recorded once the candidate step decides
        state = replace(state, pending=[CANDIDATE])
        effect = BuildCandidate(round=rnd, iteration=it, agents=list(state.implementers))
        return _accept(state), [effect]
    return _to_loop2(state, summary="")


def _candidate_ready(state: RunState, event: CandidateReady) -> Step:
    if (stale := _stale(state, event.round, event.iteration)) is not None:
        return _reject(state, event, stale)
    if not _building(state):
        return _reject(state, event, "no candidate is being built")
    if event.ok:
        return _to_loop2(replace(state, head=event.head), summary=event.summary)
    rnd, it = state.loop2_round, state.loop3_iteration
    header = f"Loop 3 iteration {it} of round {rnd} failed the evidence gate:\n"
    return _gate_failed(state, header + event.feedback)


def _to_loop2(state: RunState, *, summary: str) -> Step:
    """Record the passed gate and open the consensus round over the implementers' work."""
    mean, low = _scores(state)
    state = _record(state, "loop3", "gate-passed", score=mean, low=low)
    combined = "\n\n".join(
        f"## {a} (confidence {state.results[a].confidence:g})\n{state.results[a].output}"
        for a in state.implementers
    )
    if summary:
        combined += "\n\n" + summary
    state = replace(state, status="loop2", pending=list(state.validators))
    rnd = state.loop2_round
    effect = RunValidators(agents=list(state.validators), round=rnd, combined_output=combined)
    return _accept(state), [effect]


def _gate_failed(state: RunState, feedback: str) -> Step:
    """Record the failed gate; the next iteration gets ``feedback``, or escalate."""
    rnd, it = state.loop2_round, state.loop3_iteration
    mean, low = _scores(state)
    state = _record(state, "loop3", "gate-failed", score=mean, low=low)
    if state.round_feedback:
        feedback += f"\n\nFeedback this round started with:\n{state.round_feedback}"
    if it < state.limits.max_loop3:
        return _loop3(state, round=rnd, feedback=feedback, iteration=it + 1)
    return _escalate(state, f"gate failed {it} times in round {rnd}", feedback=feedback)


def _validators_closed(state: RunState, event: ValidatorsClosed) -> Step:
    rnd = state.loop2_round
    if event.round is not None and event.round != rnd:
        return _reject(state, event, f"stale consensus result for round {event.round}; now {rnd}")
    if event.winner is not None:
        state = replace(state, winner=event.winner)
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
    if decision not in _DECISIONS:
        return _reject(state, event, f"unknown decision {decision!r}")
    state = _record(state, "loop4", decision)
    reason = event.reason or f"owner {state.owner} decided {decision}"
    if decision == "ESCALATE":
        return _escalate(replace(state, decision="ESCALATE"), reason, feedback=state.feedback)
    if decision == "ABORT":
        return _finish(state, "failed", "ABORT", event.reason or "aborted by the owner")
    if decision == "ITERATE":
        feedback = f"The product owner asked for another iteration: {reason}"
        feedback += "".join(f"\n- {item}" for item in event.backlog)
        nxt, budget = state.loop2_round + 1, state.limits.max_loop2
        if nxt > budget:
            why = f"owner asked to iterate, but all {budget} rounds are spent"
            return _escalate(state, why, feedback=feedback)
        return _loop3(state, round=nxt, feedback=feedback)
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
