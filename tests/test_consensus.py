"""cfn_daemon.core.consensus: fault math, trimmed score robustness, round admission, feedback."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfn_daemon.core.consensus import (
    ISSUE_TYPES,
    SEVERITIES,
    Issue,
    RoundConfig,
    RoundInput,
    RoundOutcome,
    Vote,
    aggregate_feedback,
    approvals_needed,
    close_round,
    issues_from_text,
    quorum,
    render_feedback,
    sign_vote,
    suspects,
    tolerated_faults,
    trimmed_score,
    verify_vote,
)

PROPS = settings(max_examples=200, deadline=None)
CFG = RoundConfig()
RUN = "run-42"
TOKENS = {f"v{i}": f"token-of-v{i}".encode() for i in range(1, 8)}
MEMBERS = list(TOKENS)  # v1..v7: n = 7, f = 2, quorum 5, approvals 5


def vote(who: str, approve: bool = True, confidence: float = 0.95, **kw: object) -> Vote:
    kw.setdefault("reasoning", f"{who} checked the diff")
    return Vote(validator=who, approve=approve, confidence=confidence, **kw)  # type: ignore[arg-type]


def signed(v: Vote, token: bytes | None = None, round_no: int = 1) -> Vote:
    key = TOKENS.get(v.validator, b"stranger") if token is None else token
    return msgspec.structs.replace(v, signature=sign_vote(key, RUN, round_no, v))


def checked(*votes: Vote, round_no: int = 1) -> list[tuple[Vote, bool]]:
    """Votes in arrival order with the verification a round service would do."""
    return [
        (v, v.validator in TOKENS and verify_vote(TOKENS[v.validator], RUN, round_no, v))
        for v in votes
    ]


def run(*votes: Vote, deadline: bool = True, cfg: RoundConfig = CFG) -> RoundOutcome:
    """A round of v1..v7 over signed votes."""
    return close_round(MEMBERS, checked(*votes), cfg, deadline_passed=deadline)


def trusted(members: list[str], *votes: Vote) -> RoundOutcome:
    """A closed round whose votes all passed the signature check."""
    return close_round(members, [(v, True) for v in votes], CFG, deadline_passed=True)


# --------------------------------------------------------------------------- fault math


@pytest.mark.parametrize(
    ("n", "f", "q", "approvals"),
    [
        (1, 0, 1, 1),
        (2, 0, 2, 1),
        (3, 0, 3, 1),
        (4, 1, 3, 3),
        (5, 1, 4, 3),
        (6, 1, 5, 3),
        (7, 2, 5, 5),
        (8, 2, 6, 5),
        (9, 2, 7, 5),
        (10, 3, 7, 7),
    ],
)
def test_fault_table(n: int, f: int, q: int, approvals: int) -> None:
    assert (tolerated_faults(n), quorum(n), approvals_needed(n)) == (f, q, approvals)


def test_fault_math_edges() -> None:
    assert (tolerated_faults(0), quorum(0)) == (0, 0)
    with pytest.raises(ValueError, match=">= 0"):
        tolerated_faults(-1)


@given(st.integers(1, 500))
def test_fault_math_invariants(n: int) -> None:
    f = tolerated_faults(n)
    assert n >= 3 * f + 1 > n - 3  # f is the largest value with n >= 3f + 1
    assert quorum(n) >= approvals_needed(n) == 2 * f + 1  # a quorum can hold enough approvals
    assert 2 * quorum(n) - n >= f + 1  # two quorums share an honest member


# --------------------------------------------------------------------------- trimmed score


def support(v: Vote) -> float:
    return v.confidence if v.approve else 0.0


confidences = st.floats(0.0, 1.0)
honest_votes = st.builds(vote, st.just("h"), st.booleans(), confidences)
# Adversaries may claim anything, even confidences a round would reject as invalid.
adversarial_votes = st.builds(vote, st.just("x"), st.booleans(), st.floats(-1e6, 1e6))


@st.composite
def byzantine_round(draw: st.DrawFn) -> tuple[int, list[Vote], list[Vote]]:
    """n members, m counted votes of which a <= k = min(f, (m-1)//2) are adversarial."""
    n = draw(st.integers(1, 16))
    m = draw(st.integers(1, n))
    k = min(tolerated_faults(n), (m - 1) // 2)
    a = draw(st.integers(0, k))
    honest = draw(st.lists(honest_votes, min_size=m - a, max_size=m - a))
    bad = draw(st.lists(adversarial_votes, min_size=a, max_size=a))
    return n, honest, bad


@PROPS
@given(byzantine_round(), st.randoms(use_true_random=False))
def test_score_stays_within_honest_support(
    case: tuple[int, list[Vote], list[Vote]], rnd: random.Random
) -> None:
    """Bound: <= k = min(f, (m-1)//2) arbitrary votes → min honest <= score <= max honest."""
    n, honest, bad = case
    votes = honest + bad
    rnd.shuffle(votes)
    score = trimmed_score(votes, members=n)
    lo, hi = min(map(support, honest)), max(map(support, honest))
    assert lo <= score <= hi


@PROPS
@given(st.integers(1, 16).flatmap(lambda n: st.tuples(st.just(n), st.data())))
def test_quorum_round_tolerates_f_arbitrary_voters(case: tuple[int, st.DataObject]) -> None:
    """Through close_round: quorum reached and <= f arbitrary voters → score in honest range."""
    n, data = case
    f = tolerated_faults(n)
    members = [f"m{i}" for i in range(n)]
    counted = data.draw(st.integers(quorum(n), n))
    a = data.draw(st.integers(0, f))
    votes = [
        vote(who, data.draw(st.booleans()), data.draw(confidences)) for who in members[:counted]
    ]
    honest = votes[a:]  # the first `a` voters are the adversaries: any valid vote
    out = trusted(members, *votes)
    assert out.status in ("passed", "failed")
    assert out.score is not None
    assert min(map(support, honest)) <= out.score <= max(map(support, honest))


def test_bound_is_tight_beyond_f() -> None:
    """f + 1 colluding rejecters can drag the score below every honest support."""
    votes = [vote("a", True, 0.9), vote("b", True, 0.9), vote("c", False), vote("d", False)]
    assert trimmed_score(votes, members=4) == pytest.approx(0.45)


def test_trimmed_score_examples() -> None:
    seven = [vote(f"v{i}", True, c) for i, c in enumerate([0.1, 0.9, 0.92, 0.94, 0.96, 1, 1])]
    assert trimmed_score(seven) == pytest.approx((0.92 + 0.94 + 0.96) / 3)  # f=2 trimmed
    # Five votes of a 7-member round: f=2 from the members → only the median survives.
    assert trimmed_score(seven[:5], members=7) == pytest.approx(0.92)
    # Two votes of a 7-member round: trimming backs off to k = (2-1)//2 = 0.
    assert trimmed_score(seven[1:3], members=7) == pytest.approx(0.91)
    assert trimmed_score([vote("r", False, 1.0)]) == 0.0  # a confident reject is zero support
    assert trimmed_score([vote("a", True, 0.9)] * 4) == 0.9  # exact, no float drift
    with pytest.raises(ValueError, match="at least one vote"):
        trimmed_score([])


# --------------------------------------------------------------------------- signatures


def test_signature_verifies_only_with_the_right_token() -> None:
    v = signed(vote("v1", issues=[Issue("security", "high", "eval of input", "a.py:3")]))
    assert len(v.signature) == 64
    assert verify_vote(TOKENS["v1"], RUN, 1, v)
    assert not verify_vote(TOKENS["v2"], RUN, 1, v)
    assert not verify_vote(TOKENS["v1"], RUN, 1, msgspec.structs.replace(v, signature=""))
    assert not verify_vote(TOKENS["v1"], RUN, 1, msgspec.structs.replace(v, signature="é" * 64))


@pytest.mark.parametrize(
    "tamper",
    [
        {"validator": "v2"},
        {"approve": False},
        {"confidence": 0.951},
        {"confidence": 0.950001},
        {"reasoning": "v1 checked the diff!"},
        {"issues": []},
        {"issues": [Issue("quality", "high", "eval of input", "a.py:3")]},
        {"issues": [Issue("security", "low", "eval of input", "a.py:3")]},
        {"issues": [Issue("security", "high", "eval of inputs", "a.py:3")]},
        {"issues": [Issue("security", "high", "eval of input", "a.py:4")]},
        {"issues": [Issue("security", "high", "eval of input")]},
        {"round": 2},
    ],
)
def test_tampering_with_a_signed_field_breaks_the_signature(tamper: dict[str, object]) -> None:
    v = signed(vote("v1", issues=[Issue("security", "high", "eval of input", "a.py:3")]))
    assert verify_vote(TOKENS["v1"], RUN, 1, v)
    assert not verify_vote(TOKENS["v1"], RUN, 1, msgspec.structs.replace(v, **tamper))


def test_signature_binds_run_and_round() -> None:
    v = signed(vote("v1"), round_no=3)
    assert verify_vote(TOKENS["v1"], RUN, 3, v)
    assert not verify_vote(TOKENS["v1"], RUN, 4, v)
    assert not verify_vote(TOKENS["v1"], "run-43", 3, v)
    # Confidence is signed at 6 decimals: sub-1e-6 float noise from a round trip is fine.
    assert verify_vote(TOKENS["v1"], RUN, 3, msgspec.structs.replace(v, confidence=0.95 + 1e-12))
    assert verify_vote(TOKENS["v1"], RUN, 3, msgspec.json.decode(msgspec.json.encode(v), type=Vote))


# --------------------------------------------------------------------------- the round


def test_byzantine_scenario_passes_on_the_honest_majority() -> None:
    """7 validators: 5 honest (0.95), v6 silent, v7 equivocates, someone forges v1's name."""
    forged = signed(vote("v1", approve=False, confidence=1.0), token=TOKENS["v7"])
    votes = [
        signed(vote("v7", True, 0.99)),
        forged,  # arrives before v1's real vote; must not take its place
        *(signed(vote(f"v{i}")) for i in range(1, 6)),
        signed(vote("v7", False, 0.9, issues=[Issue("security", "critical", "fake")])),
    ]
    out = run(*votes)
    assert out.status == "passed", out.reason
    assert (out.score, out.approvals, out.votes_counted) == (0.95, 5, 5)
    assert (out.quorum, out.f) == (5, 2)
    assert out.accepted == ["v1", "v2", "v3", "v4", "v5"]
    assert out.missing == ["v6"]
    assert out.equivocations == out.faulty == ["v7"]
    assert out.rejected == [("v1", "bad signature")]
    assert out.feedback == []  # the equivocator's issues do not count
    assert out.reason == (
        "passed: score 0.95 >= 0.90 with 5/7 approvals (needs 5), 5/7 votes counted, "
        "quorum 5/7; 1 missing: v6; 1 equivocated: v7; 1 vote(s) rejected"
    )
    # Before the deadline the round waits for v6 (v7 is faulty, no need to wait for it).
    early = run(*votes, deadline=False)
    assert early.status == "open"
    assert early.reason.endswith("waiting for v6")
    assert run(*votes, signed(vote("v6")), deadline=False).status == "passed"


def test_non_member_vote_rejected() -> None:
    out = run(signed(vote("mallory")), *(signed(vote(f"v{i}")) for i in range(1, 8)))
    assert out.rejected == [("mallory", "not a member")]
    assert out.status == "passed"
    assert "mallory" not in out.accepted
    assert out.votes_counted == 7


def test_identical_resend_is_not_an_equivocation() -> None:
    first = signed(vote("v1"))
    resend = msgspec.structs.replace(first, round=1)  # same signed content
    out = run(first, resend, first, *(signed(vote(f"v{i}")) for i in range(2, 8)))
    assert out.equivocations == out.faulty == []
    assert out.rejected == []
    assert out.accepted.count("v1") == 1
    assert out.votes_counted == 7


def test_open_round_stays_open_before_deadline() -> None:
    votes = [signed(vote(f"v{i}")) for i in range(1, 7)]
    out = run(*votes, deadline=False)
    assert out.status == "open"
    assert out.missing == ["v7"]
    assert out.score == pytest.approx(0.95)  # provisional
    assert out.reason == "open: 6/7 votes counted, quorum 5/7; waiting for v7"
    assert run(*votes, deadline=True).status == "passed"
    assert run(*votes, signed(vote("v7")), deadline=False).status == "passed"


def test_no_quorum_at_deadline() -> None:
    out = run(*(signed(vote(f"v{i}")) for i in range(1, 5)))
    assert out.status == "no_quorum"
    assert out.missing == ["v5", "v6", "v7"]
    assert out.reason == "no quorum: 4/7 votes counted, quorum 5/7; 3 missing: v5, v6, v7"
    empty = run()
    assert (empty.status, empty.score, empty.votes_counted) == ("no_quorum", None, 0)


def test_threshold_edge_exactly_passes() -> None:
    four = ["a", "b", "c", "d"]
    assert trusted(four, *(vote(m, True, 0.9) for m in four)).status == "passed"
    # 0.85 and 0.95 average to 0.9 only up to float rounding: still a pass.
    pair = ["a", "b"]
    tie = trusted(pair, vote("a", True, 0.85), vote("b", True, 0.95))
    assert tie.status == "passed", tie.reason
    below = trusted(four, *(vote(m, True, 0.8999) for m in four))
    assert below.status == "failed"
    assert below.reason.startswith("failed: score 0.8999 < 0.9000 with 4/4 approvals")


def test_threshold_is_configurable() -> None:
    votes = [signed(vote(f"v{i}", True, 0.8)) for i in range(1, 8)]
    assert run(*votes).status == "failed"
    assert run(*votes, cfg=RoundConfig(threshold=0.75)).status == "passed"
    with pytest.raises(ValueError, match="threshold"):
        RoundConfig(threshold=1.5)


def test_reject_heavy_round_fails_with_numbers() -> None:
    issue = Issue("testing", "high", "no tests for the parser", "parser.py")
    votes = [signed(vote(f"v{i}", True, 0.9)) for i in range(1, 3)] + [
        signed(vote(f"v{i}", False, 0.8, issues=[issue])) for i in range(3, 8)
    ]
    out = run(*votes)
    assert out.status == "failed"
    assert (out.approvals, out.score) == (2, 0.0)
    assert out.reason == (
        "failed: score 0.00 < 0.90 and only 2/7 approvals (needs 5), 7/7 votes counted, quorum 5/7"
    )
    assert out.feedback == [issue]  # five validators, one issue


def test_high_score_without_enough_approvals_fails() -> None:
    # f=2 trims the two rejects away, but 4 approvals < 2f+1 = 5.
    members = [f"m{i}" for i in range(7)]
    votes = [vote(m, True, 0.95) for m in members[:4]] + [vote("m4", False), vote("m5", False)]
    out = trusted(members, *votes)
    assert out.status == "failed"
    assert out.score == pytest.approx(0.95)
    assert "score 0.95 >= 0.90 and only 4/7 approvals (needs 5)" in out.reason


def test_invalid_confidence_rejected() -> None:
    members = ["a", "b", "c", "d"]
    bad = [vote("a", True, 1.5), vote("b", True, math.nan), vote("c", True, -0.1)]
    out = trusted(members, *bad)
    assert out.rejected == [(m, "invalid confidence") for m in "abc"]
    assert out.votes_counted == 0


def test_bad_members_list() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        close_round([], [], CFG, deadline_passed=True)
    with pytest.raises(ValueError, match="unique"):
        close_round(["a", "a"], [], CFG, deadline_passed=True)


def test_reject_reasoning_becomes_feedback_and_outcome_serialises() -> None:
    votes = [vote(m, True, 0.95) for m in "abc"] + [
        vote("d", False, 0.9, reasoning="- missing docs for the API\n- [security] token logged")
    ]
    out = RoundInput(members=list("abcd"), received=[(v, True) for v in votes]).close()
    assert out.status == "passed"  # n=4, f=1: the lone reject is trimmed; 3 approvals >= 3
    assert out.feedback == [
        Issue("quality", "medium", "missing docs for the API"),
        Issue("security", "medium", "token logged"),
    ]
    again = msgspec.json.decode(msgspec.json.encode(out), type=RoundOutcome)
    assert again == out


votes_strategy = st.lists(
    st.tuples(
        st.builds(
            vote,
            st.sampled_from(["a", "b", "c", "d", "e", "zz"]),
            st.booleans(),
            st.sampled_from([0.0, 0.5, 0.9, 1.0, 2.0]),
        ),
        st.booleans(),
    ),
    max_size=20,
)


@PROPS
@given(votes_strategy, st.booleans())
def test_round_invariants(received: list[tuple[Vote, bool]], deadline: bool) -> None:
    members = ["a", "b", "c", "d", "e"]
    out = close_round(members, received, CFG, deadline_passed=deadline)
    assert sorted(out.accepted + out.faulty + out.missing) == members  # a partition
    assert out.votes_counted == len(out.accepted)
    assert out.approvals <= out.votes_counted
    assert (out.score is None) == (out.votes_counted == 0)
    assert set(out.suspects) <= set(out.accepted)
    if out.status == "passed":
        assert out.votes_counted >= out.quorum and out.approvals >= 2 * out.f + 1
        assert out.score is not None and out.score >= CFG.threshold - 1e-9
    if not deadline and out.status != "open":
        assert len(out.accepted) + len(out.faulty) == len(members)


def test_required_validator_veto_fails_an_otherwise_passing_round() -> None:
    issue = Issue("testing", "critical", "`make test` exits 2", "tests/test_parse.py")
    approvals = [signed(vote(f"v{i}")) for i in range(1, 7)]
    veto = signed(vote("v7", False, 1.0, reasoning="checks failed", issues=[issue]))
    assert run(*approvals, veto).status == "passed"  # without the veto: 6/7 approve, 0.95
    out = close_round(
        MEMBERS, checked(*approvals, veto), CFG, deadline_passed=True, required=frozenset({"v7"})
    )
    assert out.status == "failed"
    assert out.score == pytest.approx(0.95)  # the math itself is unchanged
    assert out.reason == (
        "failed: required validator v7 rejected; score 0.95 >= 0.90 with 6/7 approvals "
        "(needs 5), 7/7 votes counted, quorum 5/7"
    )
    assert out.feedback == [issue]
    # The same through RoundInput.
    ri = RoundInput(
        members=MEMBERS,
        received=checked(*approvals, veto),
        deadline_passed=True,
        required=frozenset({"v7"}),
    )
    assert ri.close() == out


def test_several_required_vetoes_are_named_in_member_order() -> None:
    votes = [signed(vote(f"v{i}")) for i in range(1, 6)]
    vetoes = [signed(vote("v7", False, 0.9)), signed(vote("v6", False, 0.9))]
    required = frozenset({"v6", "v7", "v1"})
    out = close_round(
        MEMBERS, checked(*vetoes, *votes), CFG, deadline_passed=True, required=required
    )
    assert out.status == "failed"
    assert out.reason.startswith("failed: required validators v6, v7 rejected; score ")
    assert "and only" not in out.reason  # 5 approvals still meet 2f + 1


def test_required_validator_approving_or_unverified_follows_the_normal_rules() -> None:
    req = frozenset({"v7"})
    approvals = [signed(vote(f"v{i}")) for i in range(1, 7)]

    def judged(*votes: Vote, deadline: bool = True) -> RoundOutcome:
        return close_round(MEMBERS, checked(*votes), CFG, deadline_passed=deadline, required=req)

    assert judged(*approvals, signed(vote("v7"))).status == "passed"
    # A reject under a forged signature is not v7's vote: it does not veto.
    forged = signed(vote("v7", False, 1.0), token=b"not v7's token")
    out = judged(*approvals, forged)
    assert out.status == "passed", out.reason
    assert out.rejected == [("v7", "bad signature")]
    # A missing required vote: passed at the deadline, open before it.
    assert judged(*approvals).status == "passed"
    assert judged(*approvals, deadline=False).status == "open"
    # An equivocating required validator is faulty: none of its votes count.
    flip = [signed(vote("v7")), signed(vote("v7", False, 0.9))]
    assert judged(*approvals, *flip).status == "passed"
    # Without quorum the round has no quorum, veto or not.
    few = judged(*approvals[:3], signed(vote("v7", False, 0.9)))
    assert few.status == "no_quorum"
    # Before the deadline a veto does not close the round early.
    early = judged(*approvals[:5], signed(vote("v7", False, 0.9)), deadline=False)
    assert early.status == "open"
    # Unknown ids in ``required`` are ignored.
    ghost = frozenset({"nobody"})
    assert (
        close_round(MEMBERS, checked(*approvals), CFG, deadline_passed=True, required=ghost).status
        == "passed"
    )


@PROPS
@given(votes_strategy, st.booleans(), st.sets(st.sampled_from(["a", "b", "c", "zz"])))
def test_required_vetoes_only_ever_turn_a_pass_into_a_failure(
    received: list[tuple[Vote, bool]], deadline: bool, required: set[str]
) -> None:
    members = ["a", "b", "c", "d", "e"]
    plain = close_round(members, received, CFG, deadline_passed=deadline)
    out = close_round(
        members, received, CFG, deadline_passed=deadline, required=frozenset(required)
    )
    counted = {v.validator: v for v, ok in received if ok and v.validator in out.accepted}
    vetoed = sorted(m for m in required if m in counted and not _first_vote(received, m).approve)
    assert msgspec.structs.replace(out, status=plain.status, reason=plain.reason) == plain
    if plain.status in ("passed", "failed") and vetoed:
        assert out.status == "failed"
        assert out.reason.startswith(
            f"failed: required validator{'s' if len(vetoed) > 1 else ''} {', '.join(vetoed)} "
        )
    else:
        assert (out.status, out.reason) == (plain.status, plain.reason)


def _first_vote(received: list[tuple[Vote, bool]], who: str) -> Vote:
    """The vote of ``who`` a round counts: the first verified one with a valid confidence."""
    return next(v for v, ok in received if ok and v.validator == who and 0 <= v.confidence <= 1)


# --------------------------------------------------------------------------- outliers


def test_outlier_confidence_flagged() -> None:
    votes = [vote(f"v{i}", True, c) for i, c in enumerate([0.9, 0.92, 0.94, 0.91, 0.1])]
    found = suspects(votes)
    assert set(found) == {"v4"}
    assert found["v4"].startswith("confidence 0.10 is ")


def test_empty_reasoning_flagged() -> None:
    votes = [vote("a", reasoning=""), vote("b", reasoning="  \n"), vote("c")]
    assert suspects(votes) == {"a": "empty reasoning", "b": "empty reasoning"}


def test_fewer_than_three_others_no_statistical_flag() -> None:
    assert suspects([vote("a", True, 0.99), vote("b", True, 0.98), vote("c", True, 0.0)]) == {}


def test_identical_others_use_a_spread_floor() -> None:
    same = [vote(f"v{i}", True, 0.95) for i in range(4)]
    assert suspects([*same, vote("near", True, 0.9)]) == {}  # 1 floor-sd away
    assert set(suspects([*same, vote("far", True, 0.5)])) == {"far"}


def test_suspects_are_recorded_not_dropped() -> None:
    votes = [signed(vote(f"v{i}")) for i in range(1, 7)] + [signed(vote("v7", True, 0.2))]
    out = run(*votes)
    assert "v7" in out.suspects and "v7" in out.accepted and out.votes_counted == 7


# --------------------------------------------------------------------------- feedback


def test_feedback_dedupes_across_validators_and_iterations() -> None:
    previous = [Issue("security", "medium", "SQL injection in  search", "db.py")]
    round_issues = [
        [Issue("security", "high", "sql injection in search", "db.py")],
        [Issue("security", "low", "SQL Injection\nin search", "db.py")],
        [Issue("security", "high", "SQL injection in search", "api.py")],  # other location
        [Issue("testing", "high", "SQL injection in search", "db.py")],  # other type
    ]
    merged = aggregate_feedback(round_issues, previous)
    assert merged == [
        Issue("security", "high", "SQL injection in search", "api.py"),
        Issue("security", "high", "sql injection in search", "db.py"),
        Issue("testing", "high", "SQL injection in search", "db.py"),
    ]


def test_feedback_ordering() -> None:
    issues = [
        Issue("testing", "low", "b"),
        Issue("security", "critical", "z"),
        Issue("architecture", "medium", "m"),
        Issue("quality", "critical", "a"),
        Issue("architecture", "medium", "c"),
    ]
    assert [(i.severity, i.type, i.message) for i in aggregate_feedback([issues])] == [
        ("critical", "quality", "a"),
        ("critical", "security", "z"),
        ("medium", "architecture", "c"),
        ("medium", "architecture", "m"),
        ("low", "testing", "b"),
    ]


@PROPS
@given(
    st.lists(
        st.lists(
            st.builds(
                Issue,
                st.sampled_from(ISSUE_TYPES),
                st.sampled_from(SEVERITIES),
                st.sampled_from(["a", "A", " a ", "b", "B  c"]),
                st.sampled_from([None, "x.py", " x.py"]),
            ),
            max_size=6,
        ),
        max_size=4,
    ),
    st.randoms(use_true_random=False),
)
def test_feedback_is_order_independent(batches: list[list[Issue]], rnd: random.Random) -> None:
    merged = aggregate_feedback(batches)
    flat = [i for b in batches for i in b]
    rnd.shuffle(flat)
    other = aggregate_feedback([flat])
    assert merged == other  # a function of the multiset of issues, not of arrival order
    assert render_feedback(flat, round_no=1) == render_feedback(list(reversed(flat)), round_no=1)


def test_render_feedback() -> None:
    issues = [
        Issue("testing", "medium", "no test for\n  empty input"),
        Issue("security", "critical", "token written to the log", "auth.py:12"),
        Issue("quality", "critical", "duplicate code"),
        Issue("documentation", "low", "README out of date", " "),
    ]
    expected = (
        "## Validator feedback (round 2)\n"
        "\n"
        "### critical\n"
        "- [quality] duplicate code\n"
        "- [security] token written to the log (at auth.py:12)\n"
        "\n"
        "### medium\n"
        "- [testing] no test for empty input\n"
        "\n"
        "### low\n"
        "- [documentation] README out of date\n"
    )
    assert render_feedback(issues, round_no=2) == expected
    assert render_feedback(list(reversed(issues)), round_no=2) == expected
    assert render_feedback([], round_no=1) == (
        "## Validator feedback (round 1)\n\nNo specific issues were reported.\n"
    )


def test_issues_from_text() -> None:
    text = """
    ## Review
    - Missing error handling in   parse()
    * [Security] secrets end up in logs
    1. [nonsense] keep the tag when it is not a type
    2) missing error handling in parse()

    plain line
    """
    assert issues_from_text(text) == [
        Issue("quality", "medium", "Missing error handling in parse()"),
        Issue("security", "medium", "secrets end up in logs"),
        Issue("quality", "medium", "[nonsense] keep the tag when it is not a type"),
        Issue("quality", "medium", "plain line"),
    ]
    assert issues_from_text("slow loop", default_type="performance") == [
        Issue("performance", "medium", "slow loop")
    ]
    assert issues_from_text("  \n- \n") == []
    with pytest.raises(ValueError, match="unknown issue type"):
        issues_from_text("x", default_type="bogus")  # type: ignore[arg-type]


def test_module_is_fast_and_pure() -> None:
    import cfn_daemon.core.consensus as mod

    src = Path(mod.__file__).read_text()
    for banned in ("import asyncio", "import redis", "import socket", "open("):
        assert banned not in src
    start = time.perf_counter()
    members = [f"m{i}" for i in range(100)]
    close_round(members, [(vote(m), True) for m in members], CFG, deadline_passed=True)
    assert time.perf_counter() - start < 0.5
