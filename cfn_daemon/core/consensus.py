"""Consensus math for the CFN validator round (Loop 2) and the feedback it sends to Loop 3.

Pure functions only (no I/O, no asyncio, no Redis).

Faults. A round has ``n`` members; it tolerates ``f = ⌊(n-1)/3⌋`` arbitrary (Byzantine)
members, needs a quorum of ``n - f`` counted votes and ``2f + 1`` approvals.

Score. Every counted vote ``i`` gives a support ``s_i = confidence_i`` if it approves and
``s_i = 0`` if it rejects (a reject's confidence does not matter: it is "no support").
With ``m`` counted votes, sort the supports and drop the ``k`` lowest and ``k`` highest,
``k = min(f, ⌊(m-1)/2⌋)`` (``f`` from the number of *members*; at least one value always
remains). The score is the mean of the remaining ``m - 2k`` values.

Bound. If at most ``k`` of the ``m`` votes are arbitrary, the score lies in
``[min honest support, max honest support]``: every kept value has ``k + 1`` values at or
below it (itself and the ``k`` dropped low ones), one of which is honest, so it is
``≥`` the honest minimum; symmetrically ``≤`` the honest maximum; a mean of values in an
interval stays in it. Once quorum is reached, ``m ≥ n - f ≥ 2f + 1`` so ``k = f``: any
``f`` arbitrary voters cannot move the score outside the honest range.

Pass ⇔ ``votes_counted ≥ quorum ∧ approvals ≥ 2f + 1 ∧ score ≥ threshold`` (the score
comparison allows 1e-9 of float rounding) ∧ no *required* validator's counted vote is a
reject (a veto). See :func:`close_round` for vote admission.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from typing import Literal, get_args

import msgspec

__all__ = [
    "ISSUE_TYPES",
    "SEVERITIES",
    "Issue",
    "IssueType",
    "RoundConfig",
    "RoundInput",
    "RoundOutcome",
    "RoundStatus",
    "Severity",
    "Vote",
    "aggregate_feedback",
    "approvals_needed",
    "close_round",
    "issues_from_text",
    "quorum",
    "render_feedback",
    "sign_vote",
    "suspects",
    "tolerated_faults",
    "trimmed_score",
    "verify_vote",
    "vote_message",
]

IssueType = Literal[
    "quality", "security", "performance", "architecture", "testing", "documentation"
]
Severity = Literal["critical", "high", "medium", "low"]
RoundStatus = Literal["open", "passed", "failed", "no_quorum"]
ISSUE_TYPES: tuple[IssueType, ...] = get_args(IssueType)
SEVERITIES: tuple[Severity, ...] = get_args(Severity)  # most severe first
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_TYPE_BY_NAME: dict[str, IssueType] = {t: t for t in ISSUE_TYPES}
SCORE_EPSILON = 1e-9  # float slack when comparing a score with the threshold
MIN_SD = 0.05  # floor on the spread used for outlier detection (others all equal ≠ infinite z)
_SIGN_DOMAIN = "cfn-vote/1"


class Issue(msgspec.Struct, frozen=True):
    """One problem a validator found. ``location`` is free-form (``path:line``, a symbol...)."""

    type: IssueType
    severity: Severity
    message: str
    location: str | None = None


class Vote(msgspec.Struct, frozen=True, kw_only=True):
    """A validator's verdict. ``confidence`` ∈ [0, 1]; ``signature`` is :func:`sign_vote`'s hex.

    ``round`` is informational (0 = unset); a vote stamped with another round never verifies.
    """

    validator: str
    approve: bool
    confidence: float
    reasoning: str = ""
    issues: list[Issue] = []
    signature: str = ""
    round: int = 0


class RoundConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Round parameters: the score a round must reach to pass."""

    threshold: float = 0.90

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {self.threshold!r}")


class RoundOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """The state of a round after admitting its votes (see :func:`close_round`)."""

    status: RoundStatus
    score: float | None
    approvals: int
    votes_counted: int
    quorum: int
    f: int
    accepted: list[str]
    rejected: list[tuple[str, str]]
    equivocations: list[str]
    faulty: list[str]
    suspects: dict[str, str]
    missing: list[str]
    feedback: list[Issue]
    reason: str


def _payload(vote: Vote) -> list[object]:
    """The signed content of a vote, independent of run and round (fixed tuple layout)."""
    return [
        vote.validator,
        vote.approve,
        round(vote.confidence, 6) + 0.0,  # + 0.0 folds -0.0 into 0.0
        vote.reasoning,
        [[i.type, i.severity, i.message, i.location] for i in vote.issues],
    ]


def _canonical(run_id: str, round_no: int, vote: Vote) -> bytes:
    return msgspec.json.encode([_SIGN_DOMAIN, run_id, round_no, *_payload(vote)])


def vote_message(run_id: str, round_no: int, vote: Vote) -> bytes:
    """The bytes an agent signs (Ed25519) for ``vote`` in ``run_id``/``round_no``."""
    return _canonical(run_id, round_no, vote)


def sign_vote(token: bytes, run_id: str, round_no: int, vote: Vote) -> str:
    """HMAC-SHA256 (hex) of the vote's signed fields for ``run_id``/``round_no`` under ``token``.

    Signed: run id, round number, validator, approve, confidence rounded to 6 decimals,
    reasoning and issues (in order). ``vote.signature`` and ``vote.round`` are not signed.
    """
    return hmac.new(token, _canonical(run_id, round_no, vote), hashlib.sha256).hexdigest()


def verify_vote(token: bytes, run_id: str, round_no: int, vote: Vote) -> bool:
    """Whether ``vote.signature`` is :func:`sign_vote` of it (constant-time comparison)."""
    if vote.round not in (0, round_no):
        return False
    expected = sign_vote(token, run_id, round_no, vote).encode()
    return hmac.compare_digest(expected, vote.signature.encode("utf-8", "replace"))


def tolerated_faults(n: int) -> int:
    """``f = ⌊(n-1)/3⌋`` arbitrary members a round of ``n`` tolerates (0 for n = 0)."""
    if n < 0:
        raise ValueError(f"member count must be >= 0, got {n}")
    return max(0, (n - 1) // 3)


def quorum(n: int) -> int:
    """Counted votes a round of ``n`` members needs: ``n - f``."""
    return n - tolerated_faults(n)


def approvals_needed(n: int) -> int:
    """Approvals a round of ``n`` members needs: ``2f + 1``."""
    return 2 * tolerated_faults(n) + 1


def _support(vote: Vote) -> float:
    return vote.confidence if vote.approve else 0.0


def trimmed_score(votes: Sequence[Vote], *, members: int | None = None) -> float:
    """The trimmed mean of the votes' supports (formula in the module docstring).

    ``members`` is the round's member count ``n`` (default: ``len(votes)``); it fixes ``f``.
    """
    if not votes:
        raise ValueError("trimmed_score needs at least one vote")
    values = sorted(_support(v) for v in votes)
    k = min(tolerated_faults(len(votes) if members is None else members), (len(values) - 1) // 2)
    kept = values[k : len(values) - k]
    # Clamp: fsum/len can miss the exact mean by an ulp; mathematically it lies in the range.
    return min(max(math.fsum(kept) / len(kept), kept[0]), kept[-1])


def suspects(votes: Sequence[Vote]) -> dict[str, str]:
    """Validators whose vote looks off → why. One vote per validator; recorded, never dropped.

    Flags a confidence more than 2 standard deviations (sample sd of the *other* votes,
    floored at ``MIN_SD``) from the others' mean (judged only with ≥ 3 other votes), and
    empty or whitespace-only reasoning.
    """
    out: dict[str, str] = {}
    for i, vote in enumerate(votes):
        reasons: list[str] = []
        others = [v.confidence for j, v in enumerate(votes) if j != i]
        if len(others) >= 3:
            mean = statistics.fmean(others)
            sd = max(statistics.stdev(others), MIN_SD)
            z = abs(vote.confidence - mean) / sd
            if z > 2.0:
                reasons.append(
                    f"confidence {vote.confidence:.2f} is {z:.1f} sd from "
                    f"the others' mean {mean:.2f}"
                )
        if not vote.reasoning.strip():
            reasons.append("empty reasoning")
        if reasons:
            out[vote.validator] = "; ".join(reasons)
    return out


class RoundInput(msgspec.Struct, frozen=True, kw_only=True):
    """Everything :func:`close_round` judges: members, votes in arrival order (with the
    caller's signature check), whether the deadline has passed, and the ``required``
    validators whose reject is a veto."""

    members: list[str]
    received: list[tuple[Vote, bool]] = []
    deadline_passed: bool = False
    required: frozenset[str] = frozenset()

    def close(self, cfg: RoundConfig | None = None) -> RoundOutcome:
        """:func:`close_round` on this input."""
        return close_round(
            self.members,
            self.received,
            cfg or RoundConfig(),
            deadline_passed=self.deadline_passed,
            required=self.required,
        )


def _num(x: float, other: float) -> str:
    """``x`` with 2 decimals, or more if 2 would hide how it compares with ``other``."""
    for digits in (2, 4, 6, 9):
        if f"{x:.{digits}f}" != f"{other:.{digits}f}":
            return f"{x:.{digits}f}"
    return f"{x:.2f}"


def close_round(
    members: Sequence[str],
    received: Iterable[tuple[Vote, bool]],
    cfg: RoundConfig,
    *,
    deadline_passed: bool,
    required: frozenset[str] = frozenset(),
) -> RoundOutcome:
    """Admit the received votes (arrival order) and decide the round.

    Per vote, in order: a non-member → rejected ``"not a member"``; ``verified`` false →
    ``"bad signature"`` (the named validator is *not* blamed: anyone can forge a name);
    confidence not a number in [0, 1] → ``"invalid confidence"``. A member's first
    admissible vote is kept; re-sends with the same signed content are ignored; a
    different one is an equivocation: the validator is listed in ``equivocations`` and
    ``faulty``, and none of its votes count. Rejecting votes without structured issues
    contribute their reasoning as feedback (:func:`issues_from_text`).

    The round closes when every member has a counted vote or is faulty, or at the
    deadline; before that it is ``open`` (score etc. are provisional). Closed with fewer
    than ``quorum`` counted votes → ``no_quorum``; else ``passed`` or ``failed`` as in the
    module docstring, except that a counted reject from a ``required`` validator (a veto,
    e.g. a check runner) fails the round whatever the score, the reason naming it
    (``required validator X rejected``). A required validator's missing, unverified or
    equivocating vote follows the normal rules.
    """
    if not members:
        raise ValueError("a round needs at least one member")
    if len(set(members)) != len(members):
        raise ValueError("round members must be unique")
    n, f = len(members), tolerated_faults(len(members))
    q, need = quorum(n), approvals_needed(n)
    member_set = set(members)
    first: dict[str, Vote] = {}
    rejected: list[tuple[str, str]] = []
    equivocations: list[str] = []
    for vote, verified in received:
        who = vote.validator
        if who not in member_set:
            rejected.append((who, "not a member"))
        elif not verified:
            rejected.append((who, "bad signature"))
        elif not (math.isfinite(vote.confidence) and 0.0 <= vote.confidence <= 1.0):
            rejected.append((who, "invalid confidence"))
        elif who not in first:
            first[who] = vote
        elif _payload(first[who]) != _payload(vote) and who not in equivocations:
            equivocations.append(who)
    faulty = [m for m in members if m in equivocations]
    counted = [v for who, v in first.items() if who not in equivocations]
    accepted = [v.validator for v in counted]
    missing = [m for m in members if m not in first]
    approvals = sum(v.approve for v in counted)
    score = trimmed_score(counted, members=n) if counted else None
    issues = [v.issues or ([] if v.approve else issues_from_text(v.reasoning)) for v in counted]
    tally = f"{len(counted)}/{n} votes counted, quorum {q}/{n}"
    faults = [
        f"{len(x)} {label}: {', '.join(x)}"
        for label, x in (("missing", missing), ("equivocated", equivocations))
        if x
    ] + ([f"{len(rejected)} vote(s) rejected"] if rejected else [])
    status: RoundStatus
    if len(counted) + len(faulty) < n and not deadline_passed:
        status = "open"
        reason = f"open: {tally}; waiting for {', '.join(missing)}"
    elif len(counted) < q:
        status, reason = "no_quorum", f"no quorum: {tally}"
    else:
        assert score is not None  # q >= 1, so counted is non-empty
        t = cfg.threshold
        ok_score = score >= t - SCORE_EPSILON
        cmp = f"score {_num(score, t)} {'>=' if ok_score else '<'} {_num(t, score)}"
        rejecting = {v.validator for v in counted if not v.approve}
        vetoes = [m for m in members if m in required and m in rejecting]
        if vetoes:
            status, verb = "failed", "with" if approvals >= need else "and only"
            who = f"required validator{'s' if len(vetoes) > 1 else ''} {', '.join(vetoes)}"
            reason = f"failed: {who} rejected; {cmp} {verb} {approvals}/{n} approvals "
            reason += f"(needs {need}), {tally}"
        elif ok_score and approvals >= need:
            status = "passed"
            reason = f"passed: {cmp} with {approvals}/{n} approvals (needs {need}), {tally}"
        else:
            status = "failed"
            verb = "with" if approvals >= need else "and only"
            reason = f"failed: {cmp} {verb} {approvals}/{n} approvals (needs {need}), {tally}"
    if faults and status != "open":
        reason += "; " + "; ".join(faults)
    return RoundOutcome(
        status=status,
        score=score,
        approvals=approvals,
        votes_counted=len(counted),
        quorum=q,
        f=f,
        accepted=accepted,
        rejected=rejected,
        equivocations=equivocations,
        faulty=faulty,
        suspects=suspects(counted),
        missing=missing,
        feedback=aggregate_feedback(issues),
        reason=reason,
    )


_WS = re.compile(r"\s+")
_BULLET = re.compile(r"^(?:[-*•+]|\d+[.)])(?:\s+|$)")
_TAG = re.compile(r"^\[(\w+)\]\s*")


def _squash(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _key(issue: Issue) -> tuple[str, str, str]:
    return issue.type, _squash(issue.message).casefold(), _squash(issue.location or "")


def aggregate_feedback(
    rounds_issues: Iterable[Iterable[Issue]], previous: Iterable[Issue] = ()
) -> list[Issue]:
    """Merge issues across validators and iterations into one ordered, de-duplicated list.

    Issues with the same type, normalised message (casefolded, whitespace collapsed) and
    location are one: the most severe (ties: the smallest message, then location), so the
    result depends only on the issues, not on their order. Ordered by severity (critical
    first), then type, then normalised message, then location.
    """
    best: dict[tuple[str, str, str], Issue] = {}
    for issue in [*previous, *(i for batch in rounds_issues for i in batch)]:
        key = _key(issue)
        if key not in best or _pick(issue) < _pick(best[key]):
            best[key] = issue
    return sorted(best.values(), key=lambda i: (_RANK[i.severity], *_key(i), *_pick(i)))


def _pick(issue: Issue) -> tuple[int, str, str]:
    return _RANK[issue.severity], issue.message, issue.location or ""


def render_feedback(issues: Iterable[Issue], *, round_no: int) -> str:
    """A markdown prompt section listing the issues by severity (deterministic)."""
    merged = aggregate_feedback([issues])
    lines = [f"## Validator feedback (round {round_no})", ""]
    if not merged:
        lines.append("No specific issues were reported.")
    for severity in SEVERITIES:
        group = [i for i in merged if i.severity == severity]
        if not group:
            continue
        if lines[-1]:
            lines.append("")
        lines.append(f"### {severity}")
        for i in group:
            at = f" (at {_squash(i.location)})" if i.location and i.location.strip() else ""
            lines.append(f"- [{i.type}] {_squash(i.message)}{at}")
    return "\n".join(lines) + "\n"


def issues_from_text(text: str, default_type: IssueType = "quality") -> list[Issue]:
    """Free-form feedback → one ``medium`` issue per non-empty line (de-duplicated).

    List markers (``-``, ``*``, ``1.``) and markdown headings are dropped; a leading
    ``[security]``-style tag naming an issue type sets the type, else ``default_type``.
    """
    if default_type not in ISSUE_TYPES:
        raise ValueError(f"unknown issue type {default_type!r}")
    out: list[Issue] = []
    seen: set[tuple[str, str, str]] = set()
    for raw in text.splitlines():
        line = _BULLET.sub("", raw.strip())
        if not line or line.startswith("#"):
            continue
        kind: IssueType = default_type
        tag = _TAG.match(line)
        if tag and tag.group(1).casefold() in _TYPE_BY_NAME:
            kind = _TYPE_BY_NAME[tag.group(1).casefold()]
            line = line[tag.end() :]
        issue = Issue(kind, "medium", _squash(line))
        if issue.message and _key(issue) not in seen:
            seen.add(_key(issue))
            out.append(issue)
    return out
