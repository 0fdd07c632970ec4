"""Output of ``cfnctl loop``: runs, their consensus rounds, and the follow view.

Like ``render``, every function returns a string and the CLI decides where it
goes. ``FollowView`` turns a run's events into one line each; it remembers the
current round and iteration, so events that lack them still show where the run is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cfn_client.loop_schema import LoopBacklogResult, RunInfo
from cfn_client.render import (
    event_data,
    fields,
    format_age,
    format_time,
    format_value,
    now_ms,
    shorten,
    table,
)
from cfn_client.swarm_schema import Event

__all__ = [
    "FINAL_RUN_STATUSES",
    "FollowView",
    "backlog",
    "rounds_table",
    "run_change",
    "run_header",
    "run_info",
    "run_started",
    "run_summary",
    "runs_table",
]

#: Statuses in which cfnd ends a run's follow stream (escalated waits for a human).
FINAL_RUN_STATUSES = frozenset({"done", "cancelled", "failed", "escalated"})

STATUS_MEANING = {
    "new": "not started yet",
    "loop3": "Loop 3: implementers working",
    "loop2": "Loop 2: validators voting",
    "loop4": "Loop 4: product owner deciding",
    "escalated": "waiting for a human: approve or reject",
    "done": "finished",
    "cancelled": "cancelled",
    "failed": "failed",
}
# How much of the feedback the status view shows.
FEEDBACK_EXCERPT = 160
# Width of the follow view's "where" column (loop, round, iteration).
WHERE_WIDTH = 26


# --------------------------------------------------------------------------- values


def number(value: Any) -> str:
    """A score or confidence: ``0.82``; ``-`` when missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return format_value(value)


def listing(value: Any) -> str:
    """Agent ids (a list), a count, or ``-`` for none."""
    if value is None or value == [] or value == "":
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return format_value(value)


def of(n: int, limit: int) -> str:
    """``2/10``, or ``2`` when the limit is unknown."""
    return f"{n}/{limit}" if limit > 0 else str(n)


def _commands(run: RunInfo) -> list[tuple[str, str]]:
    if run.status == "escalated":
        return [
            ("next", f"`cfnctl loop approve {run.id}` (done, PROCEED) or "
                     f"`cfnctl loop reject {run.id} --feedback TEXT` (one more round)"),
        ]  # fmt: skip
    if run.backlog:
        return [("next", f"cfnctl loop backlog {run.id}")]
    return []


# --------------------------------------------------------------------------- runs


def run_started(run: RunInfo) -> str:
    """The line ``cfnctl loop TASK --follow`` prints before the events."""
    team = f"implementers {listing(run.implementers)}; validators {listing(run.validators)}"
    return (
        f"run {run.id} started on swarm {run.swarm}: {shorten(run.task)}\n"
        f"  {team}; owner {run.owner or 'built-in rule'}; "
        f"at most {run.max_loop2} round(s) of {run.max_loop3} iteration(s)"
    )


def run_header(run: RunInfo) -> str:
    """The line ``cfnctl loop follow RUN`` prints before the events."""
    return (
        f"run {run.id} on swarm {run.swarm} ({run.status}, round "
        f"{of(run.loop2_round, run.max_loop2)}): {shorten(run.task)}"
    )


def run_summary(run: RunInfo) -> str:
    """What a follow prints once the stream ended: where the run stands and what's next."""
    pairs: list[tuple[str, Any]] = [
        ("run", run.id),
        ("status", run.status),
        ("decision", run.decision or "-"),
        ("rounds", f"{run.loop2_round} of at most {run.max_loop2}"),
        ("reason", run.outcome_reason or "-"),
    ]
    if run.backlog:
        pairs.append(("backlog", f"{len(run.backlog)} item(s)"))
    return fields(pairs + _commands(run))


def run_info(run: RunInfo) -> str:
    """``cfnctl loop status``: the run, then its consensus rounds."""
    meaning = STATUS_MEANING.get(run.status)
    pairs: list[tuple[str, Any]] = [
        ("run", run.id),
        ("swarm", run.swarm),
        ("task", run.task),
        ("phase", run.phase or "-"),
        ("status", f"{run.status} ({meaning})" if meaning else run.status),
        ("round", of(run.loop2_round, run.max_loop2)),
        ("iteration", of(run.loop3_iteration, run.max_loop3)),
        ("pending", listing(run.pending)),
        ("implementers", listing(run.implementers)),
        ("validators", listing(run.validators)),
        ("owner", run.owner or "built-in rule"),
        ("decision", run.decision or "-"),
        ("reason", run.outcome_reason or "-"),
        ("feedback", shorten(run.feedback, FEEDBACK_EXCERPT) if run.feedback else "-"),
        ("backlog", f"{len(run.backlog)} item(s)" if run.backlog else "-"),
        ("created", format_time(run.created_ms)),
        ("updated", format_time(run.updated_ms)),
    ]
    body = rounds_table(run.rounds) if run.rounds else "no consensus rounds yet"
    return fields(pairs + _commands(run)) + "\n\n" + body


def rounds_table(rounds: Sequence[Mapping[str, Any]]) -> str:
    """One row per Loop 2 round (as cfnd recorded its consensus outcome)."""
    rows = [
        [r.get("round", i), r.get("status", "-"), number(r.get("score")),
         number(r.get("threshold")), listing(r.get("approvals")), listing(r.get("faulty")),
         listing(r.get("suspects"))]
        for i, r in enumerate(rounds, 1)
    ]  # fmt: skip
    return table(["ROUND", "STATUS", "SCORE", "THRESHOLD", "APPROVALS", "FAULTY", "SUSPECTS"], rows)


def runs_table(runs: Sequence[RunInfo]) -> str:
    """``cfnctl loop list``."""
    if not runs:
        return 'no runs (start one with `cfnctl loop "TASK"`)'
    now = now_ms()
    rows = [
        [r.id, r.status, of(r.loop2_round, r.max_loop2), of(r.loop3_iteration, r.max_loop3),
         r.decision or "-", r.phase or "-", format_age(r.created_ms, now), shorten(r.task, 40)]
        for r in runs
    ]  # fmt: skip
    return table(["ID", "STATUS", "ROUND", "ITER", "DECISION", "PHASE", "AGE", "TASK"], rows)


def run_change(run: RunInfo, action: str) -> str:
    """One line after approve/reject/extend/cancel: ``run r1 approved; now done (PROCEED)``."""
    decision = f" ({run.decision})" if run.decision else ""
    where = ""
    if run.status in ("loop3", "loop2", "loop4"):
        where = f", round {of(run.loop2_round, run.max_loop2)}"
    return f"run {run.id} {action}; now {run.status}{decision}{where}"


def backlog(result: LoopBacklogResult) -> str:
    """``cfnctl loop backlog``: one item per line (newlines inside an item flattened)."""
    return "\n".join(" ".join(item.split()) for item in result.items)


# --------------------------------------------------------------------------- follow


class FollowView:
    """One line per event of a followed run: time, where the run is, what happened."""

    def __init__(self, max_loop2: int = 0, max_loop3: int = 0) -> None:
        self.max_loop2 = max_loop2
        self.max_loop3 = max_loop3
        self.round = 0
        self.iteration = 0

    def line(self, event: Event) -> str:
        """The human line for ``event`` (unknown types: the type and key=value pairs)."""
        data = dict(event.data)
        data.pop("run", None)
        self._track(data)
        render = _RENDERERS.get(event.type)
        where, text, used = ("", event.type, ()) if render is None else render(self, data)
        rest = event_data({k: v for k, v in data.items() if k not in used})
        text = f"{text}  {rest}" if rest else text
        return f"{format_time(event.ts_ms)}  {where.ljust(WHERE_WIDTH)}  {text}".rstrip()

    def _track(self, data: Mapping[str, Any]) -> None:
        for key, attr in (("round", "round"), ("iteration", "iteration"),
                          ("max_loop2", "max_loop2"), ("max_loop3", "max_loop3")):  # fmt: skip
            value = data.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, attr, value)

    def loop3(self) -> str:
        return (
            f"loop3 round {of(self.round, self.max_loop2)} "
            f"iter {of(self.iteration, self.max_loop3)}"
        )

    def loop2(self) -> str:
        return f"loop2 round {of(self.round, self.max_loop2)}"


Rendered = tuple[str, str, Iterable[str]]  # where, text, data keys shown in the text


def _started(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    task = d.get("task")
    return "", "started" + (f": {shorten(str(task))}" if task else ""), ("task",)


def _implementer_done(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    state = "done" if d.get("ok", True) else "FAILED"
    text = f"{d.get('agent', '?')} {state}, confidence {number(d.get('confidence'))}"
    return view.loop3(), text, ("round", "iteration", "agent", "ok", "confidence")


def _gate(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    verdict = "passed" if d.get("passed") else "FAILED"
    text = f"gate {verdict}: mean {number(d.get('mean'))}"
    if d.get("low") not in (None, [], ""):
        text += f", low {number(d['low']) if isinstance(d['low'], float) else listing(d['low'])}"
    return view.loop3(), text, ("round", "iteration", "passed", "mean", "low")


def _vote(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    vote = "approves" if d.get("approve") else "REJECTS"
    text = f"{d.get('validator', '?')} {vote}, confidence {number(d.get('confidence'))}"
    return view.loop2(), text, ("round", "validator", "approve", "confidence")


def _round(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    score, threshold = d.get("score"), d.get("threshold")
    versus = ""
    if isinstance(score, int | float) and isinstance(threshold, int | float):
        versus = " >= " if score >= threshold else " < "
        versus += number(threshold)
    elif threshold is not None:
        versus = f" (threshold {number(threshold)})"
    text = (
        f"round {d.get('status', '?')}: score {number(score)}{versus}, "
        f"approvals {listing(d.get('approvals'))}, faulty {listing(d.get('faulty'))}, "
        f"suspects {listing(d.get('suspects'))}"
    )
    used = ("round", "status", "score", "threshold", "approvals", "faulty", "suspects")
    return view.loop2(), text, used


def _owner(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    reason = d.get("reason")
    text = f"owner decided {d.get('decision', '?')}" + (f": {reason}" if reason else "")
    return "loop4", text, ("decision", "reason")


def _escalated(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    return "", f"ESCALATED: {d.get('reason') or 'no reason given'}", ("reason",)


def _finished(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    text = f"finished: {d.get('status', '?')}"
    if d.get("decision"):
        text += f" ({d['decision']})"
    if d.get("reason"):
        text += f": {d['reason']}"
    return "", text, ("status", "decision", "reason")


_RENDERERS = {
    "loop.started": _started,
    "loop.implementer_done": _implementer_done,
    "loop.gate": _gate,
    "loop.vote": _vote,
    "loop.round": _round,
    "loop.owner": _owner,
    "loop.escalated": _escalated,
    "loop.finished": _finished,
}
