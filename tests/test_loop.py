"""cfn_daemon.core.loop: worked examples of the CFN loop plus property tests of its invariants."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfn_daemon.core import loop
from cfn_daemon.core.loop import (
    CANDIDATE,
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
    HumanApproved,
    HumanRejected,
    ImplementerDone,
    LoopEvent,
    LoopLimits,
    OwnerDecided,
    Rejected,
    RunImplementers,
    RunState,
    RunValidators,
    Start,
    ValidatorsClosed,
    step,
)

IMPL = ["a1", "a2"]
VALS = ["v1", "v2", "v3", "v4"]
PROPS = settings(max_examples=150, deadline=None)
EVENT_JSON = msgspec.json.Decoder(LoopEvent)
STATE_JSON = msgspec.json.Decoder(RunState)


def new(
    owner: str | None = "po", implementers: Sequence[str] = IMPL, **limits: float | int
) -> RunState:
    return RunState(
        run_id="r1",
        task="fix the bug",
        implementers=list(implementers),
        validators=list(VALS),
        owner=owner,
        limits=LoopLimits(**limits),  # type: ignore[arg-type]
    )


def feed(state: RunState, *events: LoopEvent) -> tuple[RunState, list[Effect]]:
    """Apply events in order; return the final state and every effect emitted."""
    out: list[Effect] = []
    for event in events:
        state, effects = step(state, event)
        out.extend(effects)
    return state, out


def done(agent: str, confidence: float | None = 0.9, **kw: object) -> ImplementerDone:
    return ImplementerDone(agent, confidence, f"output of {agent}", True, **kw)  # type: ignore[arg-type]


def all_done(state: RunState, confidence: float | None = 0.9) -> list[ImplementerDone]:
    return [done(a, confidence) for a in state.implementers]


def passed(score: float = 0.95) -> ValidatorsClosed:
    return ValidatorsClosed(True, score, False, False, "", "looks good")


def failed(feedback: str, score: float = 0.5) -> ValidatorsClosed:
    return ValidatorsClosed(False, score, False, False, feedback, "not yet")


def only(effects: list[Effect], kind: type[Effect]) -> list[Effect]:
    return [e for e in effects if isinstance(e, kind)]


# ----------------------------------------------------------------- examples


def test_pass_on_first_round() -> None:
    s, eff = step(new(), Start())
    assert s.status == "loop3"
    assert (s.loop2_round, s.loop3_iteration) == (1, 1)
    assert eff == [RunImplementers(agents=IMPL, iteration=1, round=1, feedback="")]
    s, eff = step(s, done("a2", 0.85))
    assert eff == []
    assert s.pending == ["a1"]
    s, eff = step(s, done("a1", 0.9))
    assert s.status == "loop2"
    assert s.pending == VALS
    assert eff == [
        RunValidators(
            agents=VALS,
            round=1,
            combined_output="## a1 (confidence 0.9)\noutput of a1\n\n"
            "## a2 (confidence 0.85)\noutput of a2",
        )
    ]
    s, eff = step(s, passed(0.93))
    assert s.status == "loop4"
    assert eff == [
        AskOwner(owner="po", round=1, summary="Round 1: consensus passed (score 0.93).\nlooks good")
    ]
    s, eff = step(s, OwnerDecided("PROCEED", "ship it", []))
    assert (s.status, s.decision, s.outcome_reason) == ("done", "PROCEED", "ship it")
    assert eff == [Finished(status="done", decision="PROCEED", reason="ship it")]
    assert [h.outcome for h in s.history] == ["gate-passed", "consensus-passed", "PROCEED"]
    assert s.seq == 5


def test_fail_the_gate_then_pass() -> None:
    s, _ = feed(new(), Start(), done("a1", 0.6, reason="unsure about tests"), done("a2", 0.95))
    assert s.status == "loop3"
    assert (s.loop2_round, s.loop3_iteration) == (1, 2)
    assert s.results == {}
    assert s.pending == IMPL
    assert "a1: confidence 0.6 < gate threshold 0.75 (unsure about tests)" in s.feedback
    assert "a2" not in s.feedback
    assert "mean confidence 0.775 < required mean 0.8" in s.feedback
    s, eff = feed(s, *all_done(s, 0.8))
    assert s.status == "loop2"
    assert only(eff, RunValidators)
    s, _ = feed(s, passed(), OwnerDecided("PROCEED", "ok", []))
    assert s.status == "done"
    assert [(h.kind, h.iteration, h.outcome) for h in s.history[:2]] == [
        ("loop3", 1, "gate-failed"),
        ("loop3", 2, "gate-passed"),
    ]


def test_mean_below_gate_mean_fails_even_if_each_passes_threshold() -> None:
    s, _ = feed(new(), Start(), done("a1", 0.76), done("a2", 0.78))
    assert s.loop3_iteration == 2
    assert "mean confidence 0.77 < required mean 0.8" in s.feedback
    assert "a1:" not in s.feedback


def test_gate_boundaries_are_inclusive() -> None:
    s, _ = feed(new(), Start(), done("a1", 0.75), done("a2", 0.85))  # mean exactly 0.8
    assert s.status == "loop2"
    s, _ = feed(new(), Start(), done("a1", 0.79), done("a2", 0.8))  # mean 0.795
    assert s.status == "loop3"
    assert "mean confidence 0.795 < required mean 0.8" in s.feedback


def test_gate_feedback_text_across_iterations() -> None:
    s, _ = step(new(implementers=["a1"], max_loop2=2), Start())
    s, _ = feed(s, done("a1"), failed("rename foo"))
    s, eff = feed(s, done("a1", 0.5, reason="flaky"))
    s, eff = feed(s, done("a1", 0.6))
    assert eff == [
        RunImplementers(
            agents=["a1"],
            iteration=3,
            round=2,
            feedback="Loop 3 iteration 2 of round 2 failed the confidence gate:\n"
            "- a1: confidence 0.6 < gate threshold 0.75\n"
            "- mean confidence 0.6 < required mean 0.8\n\n"
            "Feedback this round started with:\n"
            "Loop 2 round 1: the validators rejected the result (score 0.5).\nrename foo",
        )
    ]


def test_gate_exhausted_escalates() -> None:
    s, _ = step(new(max_loop3=3), Start())
    for _ in range(2):
        s, eff = feed(s, *all_done(s, 0.1))
        assert only(eff, RunImplementers)
    s, eff = feed(s, *all_done(s, 0.1))
    assert s.status == "escalated"
    assert eff == [Escalate(reason="gate failed 3 times in round 1")]
    assert s.outcome_reason == "gate failed 3 times in round 1"
    assert s.loop3_iteration == 3


def test_fail_consensus_twice_then_pass() -> None:
    s, _ = step(new(), Start())
    texts = ["the null check in parse() is missing", "add a regression test for parse()"]
    implementer_runs: list[RunImplementers] = []
    for text in texts:
        s, eff = feed(s, *all_done(s), failed(text))
        implementer_runs += [e for e in eff if isinstance(e, RunImplementers)]
    assert [(r.round, r.iteration) for r in implementer_runs] == [(2, 1), (3, 1)]
    third = implementer_runs[-1]
    assert texts[1] in third.feedback
    assert "Loop 2 round 2" in third.feedback
    assert (s.loop2_round, s.loop3_iteration) == (3, 1)
    # A gate failure inside round 3 keeps the validators' feedback for the retry.
    s, eff = feed(s, done("a1", 0.2), done("a2", 0.9))
    retry = only(eff, RunImplementers)[0]
    assert isinstance(retry, RunImplementers)
    assert (retry.round, retry.iteration) == (3, 2)
    assert "a1: confidence 0.2" in retry.feedback
    assert texts[1] in retry.feedback
    s, eff = feed(s, *all_done(s), passed(), OwnerDecided("PROCEED", "good", []))
    assert s.status == "done"
    assert s.loop2_round == 3


def test_consensus_exhausted_then_human_approves() -> None:
    s, _ = step(new(max_loop2=2), Start())
    s, _ = feed(s, *all_done(s), failed("first"))
    s, eff = feed(s, *all_done(s), failed("second"))
    assert s.status == "escalated"
    assert eff[-1] == Escalate(reason="consensus failed in 2 rounds")
    assert "second" in s.feedback
    s, eff = step(s, HumanApproved("I checked it myself"))
    assert (s.status, s.decision) == ("done", "PROCEED")
    assert eff == [Finished(status="done", decision="PROCEED", reason="I checked it myself")]
    assert s.history[-1].kind == "human"


def test_extend_after_escalation_continues() -> None:
    s, _ = step(new(max_loop2=1), Start())
    s, _ = feed(s, *all_done(s), failed("needs docs"))
    assert s.status == "escalated"
    s, eff = step(s, Extend(1))
    assert s.status == "escalated"
    assert isinstance(eff[0], Rejected)
    s, eff = step(s, Extend(3))
    assert s.limits.max_loop2 == 3
    assert s.status == "loop3"
    assert len(eff) == 1
    assert isinstance(eff[0], RunImplementers)
    assert (eff[0].round, eff[0].iteration) == (2, 1)
    assert "needs docs" in eff[0].feedback
    s, _ = feed(s, *all_done(s), failed("still no docs"))
    s, _ = feed(s, *all_done(s), passed(), OwnerDecided("DEFER", "later", ["write docs"]))
    assert (s.status, s.decision, s.backlog, s.loop2_round) == ("done", "DEFER", ["write docs"], 3)


def test_extend_while_running_only_raises_the_budget() -> None:
    s, _ = step(new(max_loop2=1), Start())
    s, eff = step(s, Extend(2))
    assert (eff, s.status, s.limits.max_loop2) == ([], "loop3", 2)
    s, eff = feed(s, *all_done(s), failed("again"))
    assert isinstance(eff[-1], RunImplementers)
    assert eff[-1].round == 2
    for bad in (2, 0, 101):
        assert isinstance(step(s, Extend(bad))[1][0], Rejected)


def test_human_rejection_grants_one_more_round() -> None:
    s, _ = step(new(max_loop2=1), Start())
    s, _ = feed(s, *all_done(s), failed("v says no"))
    s, eff = step(s, HumanRejected("use the other algorithm"))
    assert eff == [
        RunImplementers(agents=IMPL, iteration=1, round=2, feedback="use the other algorithm")
    ]
    assert s.limits.max_loop2 == 2
    s, eff = feed(s, *all_done(s), failed("v says no again"))
    assert eff[-1] == Escalate(reason="consensus failed in 2 rounds")


def test_human_rejection_at_the_hard_cap_is_refused() -> None:
    s = msgspec.structs.replace(
        new(max_loop2=100), status="escalated", loop2_round=100, loop3_iteration=1
    )
    after, eff = step(s, HumanRejected("more"))
    assert after is s
    assert isinstance(eff[0], Rejected)


@pytest.mark.parametrize(
    ("no_quorum", "all_failed", "what"),
    [(True, False, "no quorum"), (False, True, "every validator failed")],
)
def test_consensus_failure_escalates_at_once(no_quorum: bool, all_failed: bool, what: str) -> None:
    s, _ = step(new(), Start())
    s, eff = feed(s, *all_done(s), ValidatorsClosed(False, None, no_quorum, all_failed, "", ""))
    assert s.status == "escalated"
    assert eff[-1] == Escalate(reason=f"consensus-failure → escalate-to-human: {what} in round 1")


def test_contradictory_pass_fails_safe() -> None:
    s, _ = step(new(), Start())
    s, eff = feed(s, *all_done(s), ValidatorsClosed(True, 0.99, True, False, "", ""))
    assert s.status == "escalated"
    assert not only(eff, AskOwner)


def test_owner_escalates() -> None:
    s, _ = step(new(), Start())
    s, eff = feed(s, *all_done(s), passed(), OwnerDecided("ESCALATE", "legal must look", []))
    assert (s.status, s.decision) == ("escalated", "ESCALATE")
    assert eff[-1] == Escalate(reason="legal must look")
    s, eff = step(s, HumanRejected("drop the GPL dependency"))
    assert (s.status, s.decision, s.loop2_round) == ("loop3", None, 2)


def test_unknown_owner_decision_is_rejected() -> None:
    s, _ = step(new(), Start())
    s, _ = feed(s, *all_done(s), passed())
    after, eff = step(s, OwnerDecided("MAYBE", "", []))  # type: ignore[arg-type]
    assert after is s
    assert eff == [Rejected(event="OwnerDecided", reason="unknown decision 'MAYBE'")]


def test_builtin_owner_rule() -> None:
    s, _ = step(new(owner=None), Start())
    ok, eff = feed(s, *all_done(s), passed(0.92))
    assert (ok.status, ok.decision) == ("done", "PROCEED")
    assert isinstance(eff[-1], Finished)
    assert "0.92 >= threshold 0.9" in eff[-1].reason
    low, eff = feed(s, *all_done(s), passed(0.85))
    assert (low.status, low.decision) == ("escalated", "ESCALATE")
    assert isinstance(eff[-1], Escalate)
    none, _ = feed(s, *all_done(s), ValidatorsClosed(True, None, False, False, "", ""))
    assert none.status == "escalated"


@pytest.mark.parametrize(
    "event",
    [Cancel("user asked"), Fail("redis lost the stream")],
)
@pytest.mark.parametrize("prefix", range(6))
def test_cancel_and_fail_from_every_status(event: Cancel | Fail, prefix: int) -> None:
    s0, _ = step(new(max_loop2=1), Start())
    path: list[LoopEvent] = [*all_done(s0), passed(), OwnerDecided("ESCALATE", "?", [])]
    s, _ = feed(new(max_loop2=1), *([Start(), *path][:prefix]))
    assert s.status not in TERMINAL
    s, eff = step(s, event)
    status = "cancelled" if isinstance(event, Cancel) else "failed"
    assert s.status == status
    assert eff == [Finished(status=status, decision=s.decision, reason=event.reason)]
    for later in (Start(), Cancel(), HumanApproved(), Extend(50), done("a1")):
        after, eff = step(s, later)
        assert after is s
        assert eff == [Rejected(event=type(later).__name__, reason=f"the run is already {status}")]


def test_invalid_confidences_count_as_zero() -> None:
    s, _ = step(new(implementers=["a", "b", "c", "d", "e"]), Start())
    s, _ = feed(
        s,
        done("a", None),
        done("b", math.nan),
        done("c", 1.5),
        ImplementerDone("d", 0.99, "boom", False, "exit code 3"),
        done("e", 1.0),
    )
    assert (s.loop3_iteration, s.status) == (2, "loop3")
    fb = s.feedback
    assert "a: confidence 0 < gate threshold 0.75 (no valid confidence reported" in fb
    assert "b: confidence 0 < gate threshold 0.75 (no valid confidence reported" in fb
    assert "c: confidence 0 < gate threshold 0.75 (confidence 1.5 outside [0, 1]" in fb
    assert "d: confidence 0 < gate threshold 0.75 (the implementer failed: exit code 3" in fb
    assert "- e:" not in fb


def test_stale_duplicate_and_foreign_results_are_rejected() -> None:
    s, _ = feed(new(), Start(), done("a1", 0.1), done("a2", 0.1))  # now iteration 2
    for event in (
        done("a1", iteration=1),
        done("a1", round=2),
        done("ghost"),
        ValidatorsClosed(True, 1.0, False, False, "", ""),
        OwnerDecided("PROCEED", "", []),
        HumanApproved(),
        Start(),
    ):
        after, eff = step(s, event)
        assert after is s
        assert len(eff) == 1
        assert isinstance(eff[0], Rejected)
        assert eff[0].event == type(event).__name__
    s, _ = step(s, done("a1", round=1, iteration=2))
    after, eff = step(s, done("a1"))
    assert after is s
    assert eff == [
        Rejected(event="ImplementerDone", reason="'a1' already reported for round 1 iteration 2")
    ]


def test_stale_consensus_round_is_rejected() -> None:
    s, _ = step(new(), Start())
    s, _ = feed(s, *all_done(s))
    after, eff = step(s, ValidatorsClosed(True, 1.0, False, False, "", "", round=7))
    assert after is s
    assert isinstance(eff[0], Rejected)
    assert step(s, ValidatorsClosed(True, 1.0, False, False, "", "", round=1))[0].status == "loop4"


def test_unknown_event_type_is_rejected() -> None:
    s = new()
    after, eff = step(s, "Start")  # type: ignore[arg-type]
    assert after is s
    assert eff == [Rejected(event="str", reason="not applicable while the run is new")]


@pytest.mark.parametrize(
    "bad",
    [
        {"gate_threshold": 1.5},
        {"gate_mean": -0.1},
        {"consensus_threshold": math.nan},
        {"gate_threshold": True},
        {"max_loop2": 0},
        {"max_loop3": 101},
        {"max_loop3": 2.0},
    ],
)
def test_limits_are_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        LoopLimits(**bad)  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(bad), type=LoopLimits)


def test_limits_edges_and_state_validation() -> None:
    LoopLimits(gate_threshold=0, gate_mean=1, consensus_threshold=1.0, max_loop2=100, max_loop3=1)
    bad: list[dict[str, list[str]]] = [
        {"implementers": []},
        {"validators": ["v", "v"]},
        {"implementers": [""]},
    ]
    for kw in bad:
        args = {"run_id": "r", "task": "t", "implementers": ["a"], "validators": ["v"], **kw}
        with pytest.raises(ValueError, match="distinct agent ids"):
            RunState(**args)  # type: ignore[arg-type]


def test_events_decode_from_tagged_json() -> None:
    raw = (
        b'[{"type":"Start"},'
        b'{"type":"ImplementerDone","agent":"a1","confidence":null,"output":"x","ok":true},'
        b'{"type":"Extend","max_loop2":12}]'
    )
    events = msgspec.json.decode(raw, type=list[LoopEvent])
    assert events == [Start(), ImplementerDone("a1", None, "x", True), Extend(12)]
    with pytest.raises(msgspec.ValidationError):
        EVENT_JSON.decode(b'{"type":"Extend","max_loop2":12,"extra":1}')
    effect = msgspec.json.decode(
        msgspec.json.encode(Rejected(event="Start", reason="no")), type=Effect
    )
    assert effect == Rejected(event="Start", reason="no")


# ------------------------------------------------------- workspace runs, owner, budget


def ws(no_change_ok: bool = False, **limits: int) -> RunState:
    return msgspec.structs.replace(
        new(), limits=LoopLimits(**limits), workspace=True, no_change_ok=no_change_ok
    )


def worked(agent: str, confidence: float = 0.9, changed: int | None = 2) -> ImplementerDone:
    return done(agent, confidence, changed_files=changed)


def at_candidate(state: RunState) -> RunState:
    """From a workspace run in loop3: every implementer reports real work."""
    s, eff = feed(state, *(worked(a) for a in state.pending))
    assert eff[-1] == BuildCandidate(
        round=s.loop2_round, iteration=s.loop3_iteration, agents=s.implementers
    )
    return s


def test_the_names_are_reexported_from_loop() -> None:
    from cfn_daemon.core import loop_model

    assert set(loop.__all__) == {*loop_model.__all__, "step"}
    for name in loop.__all__:
        assert getattr(loop, name) is getattr(
            loop_model, name, loop.step if name == "step" else None
        )


def test_new_state_fields_default_and_round_trip() -> None:
    legacy = b'{"run_id":"r","task":"t","implementers":["a"],"validators":["v"]}'
    s = STATE_JSON.decode(legacy)
    assert (s.workspace, s.no_change_ok, s.compete, s.winner, s.head, s.budget_usd) == (
        False, False, False, None, None, None,
    )  # fmt: skip
    full = msgspec.structs.replace(
        s, workspace=True, no_change_ok=True, compete=True, winner="a", head="abc", budget_usd=2.5
    )
    assert STATE_JSON.decode(msgspec.json.encode(full)) == full


@pytest.mark.parametrize("changed", [0, None])
def test_vapor_implementer_counts_as_zero(changed: int | None) -> None:
    s, _ = feed(ws(), Start(), worked("a1", 0.95, changed), worked("a2"))
    assert (s.status, s.loop3_iteration) == ("loop3", 2)
    assert s.history[-1].outcome == "gate-failed"
    assert s.history[-1].low == 0
    assert s.feedback.startswith(
        "Loop 3 iteration 1 of round 1 failed the confidence gate:\n"
        "- a1: confidence 0 < gate threshold 0.75 (claimed 0.95, changed 0 files)\n"
    )
    assert "- a2:" not in s.feedback


def test_evidence_rule_applies_only_to_workspace_runs_without_no_change_ok() -> None:
    for state in (new(), ws(no_change_ok=True)):
        s, eff = feed(state, Start(), worked("a1", 0.95, 0), worked("a2", 0.9, None))
        assert s.results["a1"] == msgspec.structs.replace(s.results["a1"], confidence=0.95)
        assert isinstance(eff[-1], RunValidators if not state.workspace else BuildCandidate)
    # A failed or invalid report keeps its own note in a workspace run.
    s, _ = feed(ws(), Start(), ImplementerDone("a1", 0.9, "", False, "exit 1", changed_files=0))
    assert s.results["a1"].note == "the implementer failed: exit 1; counted as confidence 0"
    s, _ = feed(ws(), Start(), worked("a1", math.nan, 0))
    assert s.results["a1"].note.startswith("no valid confidence reported")


def test_candidate_ok_goes_to_loop2_with_the_summary() -> None:
    s, _ = step(ws(), Start())
    s, eff = feed(s, worked("a2", 0.85))
    assert eff == []
    s, eff = feed(s, worked("a1", 0.9))
    assert (s.status, s.pending, s.history) == ("loop3", [CANDIDATE], [])
    assert eff == [BuildCandidate(round=1, iteration=1, agents=IMPL)]
    s, eff = step(s, CandidateReady(True, "abc123", summary="2 files changed, checks passed"))
    assert (s.status, s.pending, s.head) == ("loop2", VALS, "abc123")
    assert eff == [
        RunValidators(
            agents=VALS,
            round=1,
            combined_output="## a1 (confidence 0.9)\noutput of a1\n\n"
            "## a2 (confidence 0.85)\noutput of a2\n\n2 files changed, checks passed",
        )
    ]
    assert [(h.kind, h.outcome, h.low) for h in s.history] == [("loop3", "gate-passed", 0.85)]
    assert s.history[0].score == pytest.approx(0.875)
    # Without a summary the output is the implementers' section alone.
    _, eff = step(at_candidate(step(ws(), Start())[0]), CandidateReady(True, "abc", round=1))
    assert isinstance(eff[0], RunValidators)
    assert eff[0].combined_output.endswith("## a2 (confidence 0.9)\noutput of a2")


def test_candidate_failure_is_a_gate_failure() -> None:
    s, _ = step(ws(max_loop2=2), Start())
    s, _ = feed(at_candidate(s), CandidateReady(True, "h1"), failed("rename foo"))
    assert (s.loop2_round, s.head) == (2, "h1")
    s, eff = step(at_candidate(s), CandidateReady(False, feedback="check `make test` failed"))
    assert (s.status, s.loop2_round, s.loop3_iteration, s.head) == ("loop3", 2, 2, "h1")
    expected = (
        "Loop 3 iteration 1 of round 2 failed the evidence gate:\n"
        "check `make test` failed\n\n"
        "Feedback this round started with:\n"
        "Loop 2 round 1: the validators rejected the result (score 0.5).\nrename foo"
    )
    assert eff == [RunImplementers(agents=IMPL, iteration=2, round=2, feedback=expected)]
    last = s.history[-1]
    assert (last.kind, last.round, last.iteration, last.outcome) == ("loop3", 2, 1, "gate-failed")
    assert last.score == pytest.approx(0.9)
    assert last.low == 0.9


def test_candidate_failures_escalate_after_max_loop3() -> None:
    s, _ = step(ws(max_loop3=2), Start())
    s, eff = step(at_candidate(s), CandidateReady(False, feedback="conflict in a.py"))
    assert isinstance(eff[0], RunImplementers)
    s, eff = step(at_candidate(s), CandidateReady(False, feedback="conflict in b.py"))
    assert eff == [Escalate(reason="gate failed 2 times in round 1")]
    assert s.status == "escalated"
    assert s.feedback == "Loop 3 iteration 2 of round 1 failed the evidence gate:\nconflict in b.py"
    assert [h.outcome for h in s.history] == ["gate-failed", "gate-failed"]


def test_confidence_gate_failure_in_a_workspace_run_builds_nothing() -> None:
    s, eff = feed(ws(), Start(), worked("a1", 0.3), worked("a2"))
    assert [type(e) for e in eff] == [RunImplementers, RunImplementers]
    assert [h.outcome for h in s.history] == ["gate-failed"]


def test_stale_and_misplaced_candidate_results_are_refused() -> None:
    s, _ = feed(ws(), Start(), worked("a1"))
    for state, event, why in [
        (s, CandidateReady(True, "x"), "no candidate is being built"),
        (step(new(), Start())[0], CandidateReady(True, "x"), "no candidate is being built"),
        (new(), CandidateReady(True, "x"), "not applicable while the run is new"),
    ]:
        after, eff = step(state, event)
        assert after is state
        assert eff == [Rejected(event="CandidateReady", reason=why)]
    s = at_candidate(step(ws(), Start())[0])
    for event in (CandidateReady(True, "x", round=2), CandidateReady(True, "x", iteration=2)):
        after, eff = step(s, event)
        assert after is s
        assert isinstance(eff[0], Rejected)
        assert eff[0].reason.startswith("stale result for round")
        assert eff[0].reason.endswith("current is round 1 iteration 1")
    after, eff = step(s, done("a1", round=1, iteration=1, changed_files=1))
    assert after is s
    assert eff == [
        Rejected(event="ImplementerDone", reason="'a1' already reported for round 1 iteration 1")
    ]
    s, _ = step(s, CandidateReady(True, "x", round=1, iteration=1))
    assert s.status == "loop2"
    assert isinstance(step(s, CandidateReady(True, "y"))[1][0], Rejected)


def test_an_implementer_called_candidate_is_not_confused_with_the_candidate_step() -> None:
    s, _ = step(msgspec.structs.replace(ws(), implementers=["candidate", "a2"]), Start())
    s, _ = feed(s, worked("a2"))
    assert s.pending == [CANDIDATE]  # the implementer, still to report
    assert isinstance(step(s, CandidateReady(True, "x"))[1][0], Rejected)
    s, eff = step(s, worked("candidate"))
    assert eff == [BuildCandidate(round=1, iteration=1, agents=["candidate", "a2"])]
    assert isinstance(step(s, worked("candidate"))[1][0], Rejected)
    assert step(s, CandidateReady(True, "x"))[0].status == "loop2"


def test_winner_is_stored() -> None:
    s, _ = step(ws(), Start())
    s, _ = step(at_candidate(s), CandidateReady(True, "h", candidates={"a1": "c1", "a2": "c2"}))
    s, _ = step(s, ValidatorsClosed(True, 0.95, False, False, "", "", winner="a2"))
    assert (s.status, s.winner) == ("loop4", "a2")
    s, _ = feed(new(), Start(), *all_done(new()), passed())
    assert s.winner is None


def _at(status: str) -> RunState:
    s, _ = step(ws(), Start())
    if status == "candidate":
        return at_candidate(s)
    if status in ("loop2", "loop4"):
        s, _ = step(at_candidate(s), CandidateReady(True, "h"))
    if status == "loop4":
        s, _ = step(s, passed())
    return s


@pytest.mark.parametrize("status", ["loop3", "candidate", "loop2", "loop4"])
def test_budget_exhausted_escalates_from_every_running_status(status: str) -> None:
    s = _at(status)
    s = msgspec.structs.replace(s, feedback="keep me")
    after, eff = step(s, BudgetExhausted(1.234, 1.0))
    assert eff == [Escalate(reason="budget exhausted: $1.23 of $1.00")]
    assert (after.status, after.pending, after.feedback) == ("escalated", [], "keep me")
    assert after.outcome_reason == "budget exhausted: $1.23 of $1.00"
    assert after.seq == s.seq + 1


def test_budget_exhausted_is_refused_when_not_running() -> None:
    escalated, _ = step(_at("loop2"), BudgetExhausted(5, 5))
    assert escalated.status == "escalated"
    cancelled, _ = step(escalated, Cancel())
    for state in (new(), escalated, cancelled):
        after, eff = step(state, BudgetExhausted(6, 5))
        assert after is state
        assert isinstance(eff[0], Rejected)


def test_owner_iterates_within_the_budget() -> None:
    s, _ = feed(new(), Start(), *all_done(new()), passed())
    s, eff = step(s, OwnerDecided("ITERATE", "add logging", ["log the retries", "log timeouts"]))
    feedback = (
        "The product owner asked for another iteration: add logging\n"
        "- log the retries\n- log timeouts"
    )
    assert eff == [RunImplementers(agents=IMPL, iteration=1, round=2, feedback=feedback)]
    assert (s.status, s.loop2_round, s.round_feedback, s.decision) == ("loop3", 2, feedback, None)
    assert s.history[-1].outcome == "ITERATE"
    s, _ = feed(s, *all_done(s), passed())
    s, eff = step(s, OwnerDecided("ITERATE", "tidy", []))
    assert isinstance(eff[0], RunImplementers)
    assert eff[0].feedback == "The product owner asked for another iteration: tidy"


def test_owner_iterating_past_the_budget_escalates() -> None:
    s, _ = feed(new(max_loop2=1), Start(), *all_done(new()), passed())
    s, eff = step(s, OwnerDecided("ITERATE", "one more pass", ["docs"]))
    assert eff == [Escalate(reason="owner asked to iterate, but all 1 rounds are spent")]
    assert s.status == "escalated"
    s, eff = step(s, Extend(2))  # the owner's request feeds the granted round
    assert eff == [
        RunImplementers(
            agents=IMPL,
            iteration=1,
            round=2,
            feedback="The product owner asked for another iteration: one more pass\n- docs",
        )
    ]


@pytest.mark.parametrize(
    ("reason", "why"), [("too risky", "too risky"), ("", "aborted by the owner")]
)
def test_owner_aborts(reason: str, why: str) -> None:
    s, _ = feed(new(), Start(), *all_done(new()), passed())
    s, eff = step(s, OwnerDecided("ABORT", reason))
    assert (s.status, s.decision, s.outcome_reason, s.pending) == ("failed", "ABORT", why, [])
    assert eff == [Finished(status="failed", decision="ABORT", reason=why)]
    assert s.history[-1].outcome == "ABORT"


def test_new_events_decode_from_tagged_json() -> None:
    raw = (
        b'[{"type":"CandidateReady","ok":true,"head":"abc","candidates":{"a1":"abc"}},'
        b'{"type":"BudgetExhausted","spent_usd":1,"budget_usd":0.5},'
        b'{"type":"ImplementerDone","agent":"a1","confidence":0.9,"output":"",'
        b'"ok":true,"changed_files":3},'
        b'{"type":"ValidatorsClosed","passed":true,"score":1,"no_quorum":false,'
        b'"all_failed":false,"feedback":"","summary":"","winner":"a1"}]'
    )
    assert msgspec.json.decode(raw, type=list[LoopEvent]) == [
        CandidateReady(True, "abc", {"a1": "abc"}),
        BudgetExhausted(1.0, 0.5),
        ImplementerDone("a1", 0.9, "", True, changed_files=3),
        ValidatorsClosed(True, 1.0, False, False, "", "", winner="a1"),
    ]
    effect = BuildCandidate(round=1, iteration=2, agents=["a1"])
    assert msgspec.json.decode(msgspec.json.encode(effect), type=Effect) == effect


# --------------------------------------------------------------- properties

names = st.sampled_from(["a1", "a2", "a3", "ghost", CANDIDATE])
money = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)
texts = st.text(max_size=12)
small_ints = st.none() | st.integers(0, 4)
scores = (
    st.none()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(-0.2, 1.2)
    | st.sampled_from([0.0, 0.74, 0.75, 0.8, 0.9, 1.0])
)
any_event: st.SearchStrategy[LoopEvent] = st.one_of(
    st.just(Start()),
    st.builds(
        ImplementerDone,
        names,
        scores,
        texts,
        st.booleans(),
        texts,
        small_ints,
        small_ints,
        st.none() | st.integers(-1, 3),
    ),
    st.builds(
        CandidateReady,
        st.booleans(),
        st.none() | texts,
        st.dictionaries(names, texts, max_size=2),
        texts,
        texts,
        small_ints,
        small_ints,
    ),
    st.builds(
        ValidatorsClosed,
        st.booleans(),
        scores,
        st.booleans(),
        st.booleans(),
        texts,
        texts,
        small_ints,
        st.none() | names,
    ),
    st.builds(
        OwnerDecided,
        st.sampled_from(["PROCEED", "DEFER", "ESCALATE", "ITERATE", "ABORT"]),
        texts,
        st.lists(texts),
    ),
    st.builds(HumanApproved, texts),
    st.builds(HumanRejected, texts),
    st.builds(Extend, st.integers(-1, 105)),
    st.builds(BudgetExhausted, money, money),
    st.builds(Cancel, texts),
    st.builds(Fail, texts),
)
limits_st = st.builds(
    LoopLimits,
    gate_threshold=st.sampled_from([0.0, 0.5, 0.75, 1.0]),
    gate_mean=st.sampled_from([0.0, 0.6, 0.8, 1.0]),
    consensus_threshold=st.sampled_from([0.0, 0.9, 1.0]),
    max_loop3=st.integers(1, 4),
    max_loop2=st.integers(1, 4),
)
states = st.builds(
    lambda limits, n, owner, workspace, no_change_ok, budget: RunState(
        run_id="r",
        task="t",
        implementers=["a1", "a2", "a3"][:n],
        validators=VALS,
        owner=owner,
        limits=limits,
        workspace=workspace,
        no_change_ok=no_change_ok,
        compete=workspace and n > 1,
        budget_usd=budget,
    ),
    limits_st,
    st.integers(1, 3),
    st.sampled_from([None, "po"]),
    st.booleans(),
    st.booleans(),
    st.none() | money,
)


@dataclass
class Model:
    """What the invariants need to remember across steps."""

    budget: int
    last_run: tuple[int, int] = (0, 0)
    passed_rounds: set[int] = field(default_factory=set)
    endings: int = 0


def check_step(
    model: Model, before: RunState, event: LoopEvent, after: RunState, effects: list[Effect]
) -> None:
    # Deterministic, and replaying the event from a JSON log gives the same result.
    assert step(before, event) == (after, effects)
    logged = EVENT_JSON.decode(msgspec.json.encode(event))
    assert step(STATE_JSON.decode(msgspec.json.encode(before)), logged) == (after, effects)
    assert STATE_JSON.decode(msgspec.json.encode(after)) == after
    msgspec.json.encode(effects)
    rejected = [e for e in effects if isinstance(e, Rejected)]
    if rejected or before.status in TERMINAL:
        assert after is before
        assert len(effects) == 1
        assert rejected
        return
    assert after.seq == before.seq + 1
    if isinstance(event, Extend):
        model.budget = event.max_loop2
    if isinstance(event, HumanRejected):
        model.budget = max(model.budget, before.loop2_round + 1)
    lim = after.limits
    assert lim.max_loop2 == model.budget
    assert 0 <= after.loop2_round <= lim.max_loop2
    assert 0 <= after.loop3_iteration <= lim.max_loop3
    for eff in effects:
        if isinstance(eff, RunImplementers):
            key = (eff.round, eff.iteration)
            assert key > model.last_run
            assert eff.round not in model.passed_rounds
            assert eff.iteration <= lim.max_loop3
            assert eff.round <= lim.max_loop2
            assert eff.agents == after.implementers
            assert eff.feedback == after.feedback
            if eff.iteration > 1:
                assert key == (before.loop2_round, before.loop3_iteration + 1)
            else:
                assert eff.round == before.loop2_round + 1
            model.last_run = key
        if isinstance(eff, BuildCandidate):
            assert isinstance(event, ImplementerDone)
            assert after.workspace
            assert after.pending == [CANDIDATE]
            assert (eff.round, eff.iteration) == (after.loop2_round, after.loop3_iteration)
            assert eff.agents == after.implementers
            assert after.history == before.history  # the gate is recorded by CandidateReady
        if isinstance(eff, RunValidators):
            assert eff.round == after.loop2_round
            if after.workspace:  # only a built, checked candidate reaches the validators
                assert isinstance(event, CandidateReady)
                assert event.ok
                assert after.head == event.head
    gates = [(h.round, h.iteration) for h in after.history if h.kind == "loop3"]
    assert len(gates) == len(set(gates))  # one gate entry per Loop 3 iteration
    if isinstance(event, BudgetExhausted):
        assert after.status == "escalated"
        assert after.feedback == before.feedback
    if isinstance(event, ValidatorsClosed) and event.winner is not None:
        assert after.winner == event.winner
    if after.history and after.history[-1].outcome == "consensus-passed":
        model.passed_rounds.add(after.loop2_round)
    endings = [e for e in effects if isinstance(e, Escalate | Finished)]
    model.endings += len(endings)
    entered = after.status != before.status and after.status in {*TERMINAL, "escalated"}
    assert len(endings) == (1 if entered else 0)
    if after.status in TERMINAL:
        assert endings == [Finished(after.status, after.decision, after.outcome_reason)]
    if after.status == "loop3" and after.pending == [CANDIDATE]:  # the candidate step
        assert after.workspace
        assert set(after.results) == set(after.implementers)
    elif after.status == "loop3":
        assert set(after.pending) | set(after.results) == set(after.implementers)
        assert not set(after.pending) & set(after.results)
    else:
        expected = {"loop2": after.validators, "loop4": [after.owner]}.get(after.status, [])
        assert after.pending == expected


def drive(state: RunState, events: Iterable[LoopEvent]) -> tuple[RunState, Model, list[LoopEvent]]:
    model = Model(budget=state.limits.max_loop2)
    applied: list[LoopEvent] = []
    for event in events:
        after, effects = step(state, event)
        check_step(model, state, event, after, effects)
        applied.append(event)
        state = after
    return state, model, applied


@PROPS
@given(state=states, events=st.lists(any_event, max_size=200))
def test_random_event_sequences_keep_the_invariants(
    state: RunState, events: list[LoopEvent]
) -> None:
    final, _, applied = drive(state, [Start(), *events])
    assert feed(state, *applied)[0] == final


def cooperative(state: RunState, rng: random.Random, humans: bool) -> LoopEvent | None:
    """The event a well-behaved swarm (and, if ``humans``, operator) would send next."""
    if humans and state.status in ("loop3", "loop2", "loop4") and rng.random() < 0.02:
        return BudgetExhausted(rng.random() + 1, 1.0)
    match state.status:
        case "new":
            return Start()
        case "loop3" if state.pending == [CANDIDATE]:
            ok = rng.random() < 0.7
            stamp = rng.random() < 0.5
            return CandidateReady(
                ok,
                f"sha{rng.randrange(100)}",
                feedback="" if ok else f"check `make test` failed ({rng.randrange(100)})",
                summary=rng.choice(["", "2 files changed"]),
                round=state.loop2_round if stamp else None,
                iteration=state.loop3_iteration if stamp else None,
            )
        case "loop3":
            agent = rng.choice(state.pending)
            conf = rng.choice([rng.random(), 0.8 + rng.random() / 5, 1.0])
            changed = rng.choice([None, 0, 1, 3, 3, 3])
            return ImplementerDone(
                agent, conf, f"{agent} did it", rng.random() > 0.05, changed_files=changed
            )
        case "loop2":
            good = rng.random() < 0.4
            return ValidatorsClosed(
                good,
                rng.choice([0.95, rng.random()]),
                rng.random() < 0.05,
                rng.random() < 0.05,
                f"fix item {rng.randrange(100)}",
                "summary",
            )
        case "loop4":
            choices: list[Decision] = ["PROCEED", "DEFER", "ESCALATE", "ITERATE"]
            if humans:
                choices.append("ABORT")
            return OwnerDecided(rng.choice(choices), "why", ["b"])
        case "escalated" if humans:
            pick = rng.randrange(3)
            if pick == 0:
                return HumanApproved("fine")
            if pick == 1:
                return HumanRejected("try again")
            return Extend(min(100, state.limits.max_loop2 + rng.randrange(-1, 3)))
    return None


@PROPS
@given(state=states, seed=st.integers(0, 2**32 - 1))
def test_well_behaved_swarm_always_ends(state: RunState, seed: int) -> None:
    rng = random.Random(seed)
    lim, n = state.limits, len(state.implementers)
    # Per round: each iteration's implementer results and candidate, the validators, the owner.
    bound = 1 + lim.max_loop2 * (lim.max_loop3 * (n + 1) + 2) + 1
    events: list[LoopEvent] = []
    current = state
    while (event := cooperative(current, rng, humans=False)) is not None:
        current = step(current, event)[0]
        events.append(event)
        assert len(events) <= bound
    final, model, _ = drive(state, events)
    assert final == current
    assert final.status in {"done", "escalated"}
    assert model.endings == 1


@PROPS
@given(state=states, seed=st.integers(0, 2**32 - 1), noise=st.lists(any_event, max_size=40))
def test_mixed_cooperative_and_hostile_events(
    state: RunState, seed: int, noise: list[LoopEvent]
) -> None:
    """Mostly cooperative traffic (humans included) with random events mixed in."""
    rng = random.Random(seed)
    events: list[LoopEvent] = []
    current = state
    for _ in range(200):
        event = cooperative(current, rng, humans=True)
        if event is None or (noise and rng.random() < 0.15):
            if not noise:
                break
            event = noise.pop()
        current = step(current, event)[0]
        events.append(event)
    final, _, applied = drive(state, events)
    assert final == current
    replayed = [EVENT_JSON.decode(msgspec.json.encode(e)) for e in applied]
    assert feed(state, *replayed)[0] == final


@PROPS
@given(
    limits=limits_st,
    confidences=st.lists(scores, min_size=1, max_size=3),
)
def test_gate_matches_its_definition(limits: LoopLimits, confidences: list[float | None]) -> None:
    agents = [f"a{i}" for i in range(len(confidences))]
    s, _ = step(new(implementers=agents, **msgspec.structs.asdict(limits)), Start())
    s, eff = feed(s, *(done(a, c) for a, c in zip(agents, confidences, strict=True)))
    eff_conf = [
        c if c is not None and math.isfinite(c) and 0 <= c <= 1 else 0.0 for c in confidences
    ]
    ok = all(c >= limits.gate_threshold for c in eff_conf) and (
        sum(eff_conf) / len(eff_conf) >= limits.gate_mean
    )
    assert s.history[-1].outcome == ("gate-passed" if ok else "gate-failed")
    assert isinstance(eff[-1], RunValidators if ok else RunImplementers | Escalate)


@PROPS
@given(
    limits=limits_st,
    reports=st.lists(st.tuples(scores, st.none() | st.integers(-1, 3)), min_size=1, max_size=3),
    workspace=st.booleans(),
    no_change_ok=st.booleans(),
    candidate_ok=st.booleans(),
)
def test_evidence_gate_matches_its_definition(
    limits: LoopLimits,
    reports: list[tuple[float | None, int | None]],
    workspace: bool,
    no_change_ok: bool,
    candidate_ok: bool,
) -> None:
    agents = [f"a{i}" for i in range(len(reports))]
    s = msgspec.structs.replace(
        new(implementers=agents), limits=limits, workspace=workspace, no_change_ok=no_change_ok
    )
    s, _ = step(s, Start())
    s, eff = feed(
        s, *(done(a, c, changed_files=n) for a, (c, n) in zip(agents, reports, strict=True))
    )
    vapor = workspace and not no_change_ok  # no changed file counts as confidence 0

    def effective(c: float | None, n: int | None) -> float:
        valid = c is not None and math.isfinite(c) and 0 <= c <= 1
        return c if valid and c is not None and not (vapor and not (n or 0) > 0) else 0.0

    eff_conf = [effective(c, n) for c, n in reports]
    ok = all(c >= limits.gate_threshold for c in eff_conf) and (
        sum(eff_conf) / len(eff_conf) >= limits.gate_mean
    )
    if not (ok and workspace):
        assert s.history[-1].outcome == ("gate-passed" if ok else "gate-failed")
        assert isinstance(eff[-1], RunValidators if ok else RunImplementers | Escalate)
        return
    assert s.history == []
    assert eff[-1] == BuildCandidate(round=1, iteration=1, agents=agents)
    s, eff = step(s, CandidateReady(candidate_ok, "sha", feedback="checks failed"))
    assert [h.outcome for h in s.history] == ["gate-passed" if candidate_ok else "gate-failed"]
    assert s.history[0].score == pytest.approx(sum(eff_conf) / len(eff_conf))
    assert isinstance(eff[-1], RunValidators if candidate_ok else RunImplementers | Escalate)
