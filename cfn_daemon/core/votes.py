"""Validator votes: built from a validator task's result, signed by the agent, verified
by cfnd. Both sides build the Vote with the same function, so the signed bytes agree.

A validator's executor reports its vote on the last stdout line, e.g.
``{"vote": "reject", "confidence": 0.9, "output": "why", "feedback": [{"type":
"security", "severity": "high", "message": "...", "location": "app.py:10"}]}``;
``feedback`` may also be plain text (one issue per line).
"""

from __future__ import annotations

from typing import Any

import msgspec

from cfn_client.wire.schema.swarm import TaskResult
from cfn_daemon.core.consensus import Issue, Vote, issues_from_text

REASONING_MAX = 4000


def parse_issues(feedback: Any) -> list[Issue]:
    """Structured issues from an agent's ``feedback`` (list of dicts, or text)."""
    if isinstance(feedback, str):
        return issues_from_text(feedback)
    if isinstance(feedback, list):
        out = []
        for item in feedback:
            try:
                out.append(msgspec.convert(item, Issue))
            except msgspec.ValidationError:
                out += issues_from_text(str(item))
        return out
    return []


def vote_from_result(validator: str, result: TaskResult, round_no: int) -> Vote | None:
    """The vote a validator's task result carries; None when it cast none."""
    if result.vote is None:
        return None
    return Vote(
        validator=validator,
        approve=result.vote == "approve",
        confidence=result.confidence if result.confidence is not None else 0.0,
        reasoning=result.output.strip()[:REASONING_MAX],
        issues=parse_issues(result.feedback),
        signature=result.signature,
        round=round_no,
    )
