"""Pure helpers of CFN runs: task ids, the prompts agents get, owner answers, RunInfo."""

from __future__ import annotations

from typing import Any

import msgspec

from cfn_client.wire.schema.loop import RunInfo
from cfn_client.wire.schema.swarm import TaskInfo
from cfn_daemon.core import loop


def impl_task_id(run: str, rnd: int, it: int, agent: str) -> str:
    return f"{run}.r{rnd}.i{it}.{agent}"


def val_task_id(run: str, rnd: int, agent: str) -> str:
    return f"{run}.r{rnd}.v.{agent}"


def owner_task_id(run: str, rnd: int) -> str:
    return f"{run}.r{rnd}.owner"


def implementer_prompt(state: loop.RunState) -> str:
    text = f"{state.task}\n"
    if state.feedback:
        text += f"\n{state.feedback}\n"
    return text + ('\nOn the last line print JSON: {"output": "...", "confidence": 0..1}\n')


def combined_output(state: loop.RunState) -> str:
    parts = []
    for agent in state.implementers:
        r = state.results.get(agent)
        if r is not None:
            parts.append(f"## {agent} (confidence {r.confidence:.2f})\n{r.output}")
    return "\n\n".join(parts)


def validator_prompt(state: loop.RunState) -> str:
    return (
        f"Review the implementers' work on this task.\n\nTask:\n{state.task}\n\n"
        f"{combined_output(state)}\n\nOn the last line print JSON: "
        '{"vote": "approve"|"reject", "confidence": 0..1, "output": "reasoning", '
        '"feedback": [{"type": "...", "severity": "...", "message": "...", "location": "..."}]}\n'
    )


def owner_prompt(state: loop.RunState, summary: str) -> str:
    return (
        f"Decide on this work as product owner.\n\nTask:\n{state.task}\n\n{summary}\n\n"
        'Answer PROCEED, DEFER or ESCALATE: print JSON {"output": "PROCEED: reason", '
        '"feedback": ["backlog item", ...]} on the last line.\n'
    )


def owner_decision(task: TaskInfo) -> loop.OwnerDecided:
    result = task.result
    text = (result.output if result else "").strip()
    word = text.split(":", 1)[0].split()[0].upper() if text else ""
    backlog = (
        [str(x) for x in result.feedback] if result and isinstance(result.feedback, list) else []
    )
    if task.status != "succeeded" or word not in ("PROCEED", "DEFER", "ESCALATE"):
        return loop.OwnerDecided(
            decision="ESCALATE", reason=f"owner's answer not understood: {text[:200]!r}"
        )
    return loop.OwnerDecided(decision=word, reason=text, backlog=backlog)  # type: ignore[arg-type]


def run_info(swarm: str, state: loop.RunState, fields: dict[str, Any]) -> RunInfo:
    rounds = [msgspec.json.decode(v) for k, v in sorted(fields.items()) if k.startswith("round:")]
    return RunInfo(
        id=state.run_id,
        swarm=swarm,
        task=state.task,
        status=state.status,
        phase=state.phase,
        loop2_round=state.loop2_round,
        loop3_iteration=state.loop3_iteration,
        max_loop2=state.limits.max_loop2,
        max_loop3=state.limits.max_loop3,
        implementers=state.implementers,
        validators=state.validators,
        owner=state.owner,
        pending=state.pending,
        decision=state.decision,
        outcome_reason=state.outcome_reason,
        feedback=state.feedback,
        backlog=state.backlog,
        history=[msgspec.to_builtins(h) for h in state.history],
        rounds=sorted(rounds, key=lambda r: r.get("round", 0)),
        created_ms=int(fields.get("created_ms", 0)),
        updated_ms=int(fields.get("updated_ms", 0)),
    )
