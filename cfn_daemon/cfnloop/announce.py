"""What a CFN run announces on the swarm's event stream for each applied step.

``loop.implementer_done``, ``loop.gate``, ``loop.owner``, ``loop.human``,
``loop.iteration``, ``loop.candidate``, ``loop.validating``, ``loop.escalated`` and
``loop.finished``; consensus rounds (``loop.round``) and votes (``loop.vote``) are
announced by ``cfnloop.rounds`` with their full record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cfn_daemon.core import loop


def announcements(
    old: loop.RunState,
    new: loop.RunState,
    event: Any,
    effects: list[Any],
    extra: Mapping[str, dict[str, Any]] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The events (type, data) one applied step announces, in order; ``extra`` adds
    fields the state does not hold (cost, result branch) to events of that type."""
    run = new.run_id
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(event, loop.ImplementerDone):
        c = event.confidence
        valid = event.ok and c is not None and math.isfinite(c) and 0.0 <= c <= 1.0
        out.append(
            (
                "loop.implementer_done",
                {
                    "run": run,
                    "agent": event.agent,
                    "ok": event.ok,
                    "round": event.round,
                    "iteration": event.iteration,
                    "confidence": c if valid else 0.0,
                    "reason": event.reason,
                    "changed_files": event.changed_files,
                },
            )
        )
    for h in new.history[len(old.history) :]:
        base = {"run": run, "round": h.round, "iteration": h.iteration}
        if h.kind == "loop3":
            out.append(
                (
                    "loop.gate",
                    {
                        **base,
                        "passed": h.outcome == "gate-passed",
                        "mean": h.score,
                        "low": h.low,
                        "gate_threshold": new.limits.gate_threshold,
                        "gate_mean": new.limits.gate_mean,
                    },
                )
            )
        elif h.kind == "loop4" and isinstance(event, loop.OwnerDecided):
            out.append(
                (
                    "loop.owner",
                    {
                        **base,
                        "decision": event.decision,
                        "reason": event.reason,
                        "backlog": list(event.backlog),
                    },
                )
            )
        elif h.kind == "human":
            out.append(("loop.human", {**base, "outcome": h.outcome}))
        # loop2 rounds are announced with their full consensus record by _close_round.
    for eff in effects:
        if isinstance(eff, loop.RunImplementers):
            out.append(
                (
                    "loop.iteration",
                    {
                        "run": run,
                        "round": eff.round,
                        "iteration": eff.iteration,
                        "max_loop3": new.limits.max_loop3,
                        "agents": eff.agents,
                    },
                )
            )
        elif isinstance(eff, loop.RunValidators):
            out.append(
                ("loop.validating", {"run": run, "round": eff.round, "agents": new.validators})
            )
        elif isinstance(eff, loop.Escalate):
            out.append(("loop.escalated", {"run": run, "reason": eff.reason}))
        elif isinstance(eff, loop.Finished):
            out.append(
                (
                    "loop.finished",
                    {
                        "run": run,
                        "status": eff.status,
                        "decision": eff.decision,
                        "reason": eff.reason,
                    },
                )
            )
    if isinstance(event, loop.CandidateReady):
        out.insert(
            0,
            (
                "loop.candidate",
                {
                    "run": run,
                    "round": event.round,
                    "iteration": event.iteration,
                    "ok": event.ok,
                    "head": event.head,
                    "candidates": dict(event.candidates),
                    "feedback": event.feedback[:2000],
                    "summary": event.summary,
                },
            ),
        )
    for etype, data in out:
        data.update((extra or {}).get(etype, {}))
    return out
