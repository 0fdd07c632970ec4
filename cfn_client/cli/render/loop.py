"""Output of ``cfnctl loop``: runs, their consensus rounds, and the follow view.

Like ``render``, every function returns a string and the CLI decides where it
goes. ``FollowView`` turns a run's events into one line each; it remembers the
current round and iteration, so events that lack them still show where the run is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cfn_client.cli.render.common import (
    fields,
    format_age,
    format_time,
    format_value,
    now_ms,
    shorten,
    table,
)
from cfn_client.cli.render.events import event_data
from cfn_client.wire.schema.loop import (
    LoopApplyResult,
    LoopBacklogResult,
    LoopCleanResult,
    RunInfo,
)
from cfn_client.wire.schema.swarm import Event

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
# How much of a free-text reason one follow line shows.
REASON_WIDTH = 80
# Event data that says where the run is: shown in the "where" column, not repeated.
_POSITION_KEYS = ("round", "iteration", "max_loop2", "max_loop3")


# --------------------------------------------------------------------------- values


def number(value: Any) -> str:
    """A score or confidence: ``0.82``; ``-`` when missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return format_value(value)


def listing(value: Any) -> str:
    """Agent ids (a list, or a dict's keys), a count, or ``-`` for none."""
    if value is None or value == "" or (isinstance(value, list | tuple | dict) and not value):
        return "-"
    if isinstance(value, list | tuple | dict):
        return ", ".join(str(v) for v in value)
    return format_value(value)


def of(n: int, limit: int) -> str:
    """``2/10``, or ``2`` when the limit is unknown."""
    return f"{n}/{limit}" if limit > 0 else str(n)


def _commands(run: RunInfo) -> list[tuple[str, str]]:
    if run.status == "done" and run.branch:
        return [("next", f"cfnctl loop apply {run.id}  (or --squash, --patch FILE)")]
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
    return fields(pairs + _workspace(run) + _commands(run))


def _money(usd: float) -> str:
    return f"${usd:.2f}"


def _workspace(run: RunInfo) -> list[tuple[str, Any]]:
    """Where the work is and what it cost (runs on a repository; runs that spent money)."""
    out: list[tuple[str, Any]] = []
    if run.repo:
        out.append(("repo", f"{run.repo} from {(run.base or '?')[:12]}"))
        if run.checks:
            out.append(("checks", listing(run.checks)))
        if run.branch:
            out.append(("result", f"{run.branch} at {(run.commit or '?')[:12]}"))
    if run.cost_usd or run.budget_usd:
        spent = _money(run.cost_usd)
        if run.budget_usd:
            spent += f" of {_money(run.budget_usd)} budget"
        tokens = f" ({run.input_tokens} in / {run.output_tokens} out tokens)"
        out.append(("cost", spent + (tokens if run.input_tokens or run.output_tokens else "")))
    return out


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
        *_workspace(run),
    ]
    if run.cost_by_agent:
        pairs.append(
            ("cost by agent", ", ".join(f"{a} {_money(v)}" for a, v in run.cost_by_agent.items()))
        )
    body = rounds_table(run.rounds) if run.rounds else "no consensus rounds yet"
    return fields(pairs + _commands(run)) + "\n\n" + body


def rounds_table(rounds: Sequence[Mapping[str, Any]]) -> str:
    """One row per Loop 2 round (as cfnd recorded its consensus outcome)."""
    rows = [
        [r.get("round", i), r.get("status", "-"), number(r.get("score")),
         listing(r.get("approvals")), listing(r.get("votes_counted")), listing(r.get("faulty")),
         listing(r.get("suspects")), shorten(str(r.get("reason") or "-"), 40)]
        for i, r in enumerate(rounds, 1)
    ]  # fmt: skip
    headers = ["ROUND", "STATUS", "SCORE", "APPROVALS", "VOTES", "FAULTY", "SUSPECTS", "REASON"]
    return table(headers, rows)


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
        shown = {*used, *_POSITION_KEYS} if render is not None else set()
        rest = event_data({k: v for k, v in data.items() if k not in shown})
        text = f"{text}  {rest}" if rest else text
        return f"{format_time(event.ts_ms)}  {where.ljust(WHERE_WIDTH)}  {text}".rstrip()

    def _track(self, data: Mapping[str, Any]) -> None:
        for key in _POSITION_KEYS:
            value = data.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, key, value)
        # A reject or an extend grants rounds beyond the budget the follow started with.
        if self.max_loop2:
            self.max_loop2 = max(self.max_loop2, self.round)

    def loop3(self) -> str:
        return (
            f"loop3 round {of(self.round, self.max_loop2)} "
            f"iter {of(self.iteration, self.max_loop3)}"
        )

    def loop2(self) -> str:
        return f"loop2 round {of(self.round, self.max_loop2)}"


Rendered = tuple[str, str, Iterable[str]]  # where, text, data keys shown (or hidden) by it


def _vs(value: Any, minimum: Any) -> str:
    """``0.82`` or, against a threshold, ``0.82 >= 0.75`` / ``0.40 < 0.75``."""
    if not isinstance(minimum, int | float):
        return number(value)
    if not isinstance(value, int | float):
        return f"{number(value)} (threshold {number(minimum)})"
    return f"{number(value)} {'>=' if value >= minimum else '<'} {number(minimum)}"


def _started(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    text = "started" + (f": {shorten(str(d['task']))}" if d.get("task") else "")
    team = [f"{key} {listing(d[key])}" for key in ("implementers", "validators") if d.get(key)]
    if d.get("owner"):
        team.append(f"owner {d['owner']}")
    text += f" ({'; '.join(team)})" if team else ""
    if d.get("repo"):
        text += f"\n  on {d['repo']} from {str(d.get('base') or '?')[:12]}"
        if d.get("checks"):
            text += f"; checks: {listing(d['checks'])}"
    return "", text, ("task", "implementers", "validators", "owner", "repo", "base", "checks")


def _iteration(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    return view.loop3(), f"implementers working: {listing(d.get('agents'))}", ("agents",)


def _implementer_done(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    state = "done" if d.get("ok", True) else "FAILED"
    text = f"{d.get('agent', '?')} {state}, confidence {number(d.get('confidence'))}"
    if d.get("changed_files") is not None:
        text += f", changed {d['changed_files']} file(s)"
    if d.get("cost_usd"):
        text += f", {_money(float(d['cost_usd']))}"
    if d.get("reason"):
        text += f": {shorten(str(d['reason']), REASON_WIDTH)}"
    return view.loop3(), text, ("agent", "ok", "confidence", "reason", "changed_files", "cost_usd")


def _candidate(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    if d.get("ok"):
        text = f"candidate ready at {str(d.get('head') or '?')[:12]}"
        if d.get("candidates"):
            text += f" (passing: {listing(list(d['candidates']))})"
    else:
        text = "candidate FAILED: " + shorten(str(d.get("feedback") or "?"), REASON_WIDTH)
    return view.loop3(), text, ("ok", "head", "candidates", "feedback", "summary")


def _gate(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    verdict = "passed" if d.get("passed") else "FAILED"
    text = f"gate {verdict}: lowest {_vs(d.get('low'), d.get('gate_threshold'))}"
    text += f", mean {_vs(d.get('mean'), d.get('gate_mean'))}"
    return view.loop3(), text, ("passed", "mean", "low", "gate_threshold", "gate_mean")


def _validating(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    return view.loop2(), f"validators voting: {listing(d.get('agents'))}", ("agents",)


def _vote(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    vote = "approves" if d.get("approve") else "REJECTS"
    text = f"{d.get('validator', '?')} {vote}, confidence {number(d.get('confidence'))}"
    if d.get("verified") is False:
        text += " (UNVERIFIED signature)"
    return view.loop2(), text, ("validator", "approve", "confidence", "verified")


# The consensus record's details that do not fit on one line (`loop status` has them).
_ROUND_HIDDEN = ("accepted", "rejected", "equivocations", "feedback", "f", "missing")


def _round(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    approvals = listing(d.get("approvals"))
    if isinstance(d.get("votes_counted"), int):
        approvals += f" of {d['votes_counted']} vote(s)"
    if isinstance(d.get("quorum"), int):
        approvals += f" (quorum {d['quorum']})"
    text = (
        f"round {d.get('status', '?')}: score {_vs(d.get('score'), d.get('threshold'))}, "
        f"approvals {approvals}, faulty {listing(d.get('faulty'))}, "
        f"suspects {listing(d.get('suspects'))}"
    )
    if d.get("missing"):
        text += f", missing {listing(d['missing'])}"
    # A pass or fail is said above already; other outcomes (no_quorum...) need the why.
    if d.get("reason") and d.get("status") not in ("passed", "failed"):
        text += f"; {shorten(str(d['reason']), REASON_WIDTH)}"
    used = ("status", "score", "threshold", "approvals", "votes_counted", "quorum", "faulty",
            "suspects", "reason", *_ROUND_HIDDEN)  # fmt: skip
    return view.loop2(), text, used


def _owner(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    text = f"owner decided {d.get('decision', '?')}"
    if d.get("reason"):
        text += f": {shorten(str(d['reason']), REASON_WIDTH)}"
    if d.get("backlog"):
        text += f" (backlog: {len(d['backlog'])} item(s))"
    return "loop4", text, ("decision", "reason", "backlog")


def _human(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    return "human", f"{d.get('outcome', '?')}", ("outcome",)


def _escalated(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    return "", f"ESCALATED: {d.get('reason') or 'no reason given'}", ("reason",)


def _finished(view: FollowView, d: Mapping[str, Any]) -> Rendered:
    text = f"finished: {d.get('status', '?')}"
    if d.get("decision"):
        text += f" ({d['decision']})"
    if d.get("reason"):
        text += f": {d['reason']}"
    if d.get("branch"):
        text += f"\n  result: {d['branch']} at {str(d.get('commit') or '?')[:12]}"
    if d.get("cost_usd"):
        text += f"\n  cost: {_money(float(d['cost_usd']))}"
    if d.get("input_tokens") or d.get("output_tokens"):
        text += f" ({d.get('input_tokens', 0)} tokens in, {d.get('output_tokens', 0)} out)"
    shown = ("status", "decision", "reason", "branch", "commit", "cost_usd")
    return "", text, (*shown, "input_tokens", "output_tokens")


_RENDERERS = {
    "loop.started": _started,
    "loop.iteration": _iteration,
    "loop.implementer_done": _implementer_done,
    "loop.gate": _gate,
    "loop.candidate": _candidate,
    "loop.validating": _validating,
    "loop.vote": _vote,
    "loop.round": _round,
    "loop.owner": _owner,
    "loop.human": _human,
    "loop.escalated": _escalated,
    "loop.finished": _finished,
}


def applied(result: LoopApplyResult) -> str:
    """``cfnctl loop apply``."""
    if result.file:
        return f"run {result.run}: {result.branch} written as {result.file}"
    what = "merged" if result.how == "merge" else "squashed"
    new = f" as {result.applied[:12]}" if result.applied else " (nothing new)"
    return f"run {result.run}: {result.branch} ({result.commit[:12]}) {what} into your branch{new}"


def cleaned(result: LoopCleanResult) -> str:
    """``cfnctl loop clean``."""
    return (
        f"run {result.run}: removed {len(result.worktrees)} worktree(s) and "
        f"{len(result.branches)} branch(es)"
    )
