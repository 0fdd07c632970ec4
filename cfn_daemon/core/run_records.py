"""Pure helpers of CFN runs: task ids, the prompts agents get, owner answers, RunInfo."""

from __future__ import annotations

from typing import Any

import msgspec

from cfn_client.wire.schema.loop import RunInfo
from cfn_client.wire.schema.swarm import TaskInfo
from cfn_daemon.core import loop

DECISIONS = ("PROCEED", "DEFER", "ESCALATE", "ITERATE", "ABORT")


def impl_task_id(run: str, rnd: int, it: int, agent: str) -> str:
    return f"{run}.r{rnd}.i{it}.{agent}"


def val_task_id(run: str, rnd: int, agent: str, candidate: str | None = None) -> str:
    suffix = f".{candidate}" if candidate is not None else ""
    return f"{run}.r{rnd}.v.{agent}{suffix}"


def check_task_id(run: str, rnd: int, it: int, n: int, candidate: str | None = None) -> str:
    suffix = f".{candidate}" if candidate is not None else ""
    return f"{run}.r{rnd}.i{it}.check{n}{suffix}"


def ballot_run(run: str, candidate: str | None) -> str:
    """What validators sign their votes for: the run, or one candidate of it."""
    return run if candidate is None else f"{run}#{candidate}"


class Review(msgspec.Struct, frozen=True, kw_only=True):
    """The change validators and the owner look at: where, and what it is."""

    candidate: str | None = None  # compete mode: whose branch
    branch: str
    commit: str
    stat: str
    patch: str  # capped; the full patch is an artifact file
    truncated: bool = False
    patch_file: str = ""


def owner_task_id(run: str, rnd: int) -> str:
    return f"{run}.r{rnd}.owner"


def implementer_prompt(state: loop.RunState, *, resumed: bool = False) -> str:
    """The task (with the feedback to address); a resumed session gets only the feedback."""
    if resumed and state.feedback:
        text = f"New feedback on your work (same task as before):\n\n{state.feedback}\n"
    else:
        text = f"{state.task}\n"
        if state.feedback:
            text += f"\n{state.feedback}\n"
    if state.workspace:
        text += (
            "\nYou work in a git worktree of the project (the current directory). Edit the "
            "files there; cfn commits what you leave. Do not switch branches.\n"
        )
    return text + ('\nOn the last line print JSON: {"output": "...", "confidence": 0..1}\n')


def combined_output(state: loop.RunState) -> str:
    parts = []
    for agent in state.implementers:
        r = state.results.get(agent)
        if r is not None:
            parts.append(f"## {agent} (confidence {r.confidence:.2f})\n{r.output}")
    return "\n\n".join(parts)


def review_text(review: Review | None) -> str:
    """The change itself, for validators and the owner: where it is, stat and patch."""
    if review is None:
        return ""
    who = f" (candidate of {review.candidate})" if review.candidate else ""
    cut = (
        f"\n[the patch is truncated here; the whole one is {review.patch_file}]"
        if review.truncated
        else ""
    )
    return (
        f"\n## The change{who}: branch {review.branch}, commit {review.commit[:12]}\n"
        "The current directory is a read-only checkout of it.\n\n"
        f"```\n{review.stat.rstrip()}\n```\n\n```diff\n{review.patch.rstrip()}\n```{cut}\n"
    )


def validator_prompt(state: loop.RunState, review: Review | None = None) -> str:
    return (
        f"Review the implementers' work on this task.\n\nTask:\n{state.task}\n\n"
        f"{combined_output(state)}\n{review_text(review)}\nOn the last line print JSON: "
        '{"vote": "approve"|"reject", "confidence": 0..1, "output": "reasoning", '
        '"feedback": [{"type": "...", "severity": "...", "message": "...", "location": "..."}]}\n'
    )


def owner_prompt(state: loop.RunState, summary: str, review: Review | None = None) -> str:
    return (
        f"Decide on this work as product owner.\n\nTask:\n{state.task}\n\n{summary}\n"
        f"{review_text(review)}\n"
        "Answer PROCEED, DEFER, ESCALATE, ITERATE (another round, say what to change) or "
        'ABORT: print JSON {"decision": "PROCEED", "reason": "...", "backlog": ["item", ...]} '
        "on the last line.\n"
    )


def _decision_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        line = line.strip().strip("`")
        if line.startswith("{") and line.endswith("}"):
            try:
                obj = msgspec.json.decode(line)
            except msgspec.DecodeError:
                continue
            if isinstance(obj, dict) and "decision" in obj:
                return obj
    return None


def owner_decision(task: TaskInfo) -> loop.OwnerDecided:
    """The owner's answer: a ``{"decision": ...}`` JSON line, or text starting with it."""
    result = task.result
    text = (result.output if result else "").strip()
    backlog = (
        [str(x) for x in result.feedback] if result and isinstance(result.feedback, list) else []
    )
    obj = _decision_json(text)
    if obj is not None:
        word, reason = str(obj.get("decision", "")).upper(), str(obj.get("reason") or text)
        items = obj.get("backlog")
        if isinstance(items, list):
            backlog = [str(x) for x in items]
    else:
        word, reason = (text.split(":", 1)[0].split()[0].upper() if text else ""), text
    if task.status != "succeeded" or word not in DECISIONS:
        return loop.OwnerDecided(
            decision="ESCALATE", reason=f"owner's answer not understood: {text[:200]!r}"
        )
    return loop.OwnerDecided(decision=word, reason=reason, backlog=backlog)  # type: ignore[arg-type]


class Spend(msgspec.Struct, kw_only=True):
    """What a run's tasks cost, as their agent CLIs reported it."""

    usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    by_agent: dict[str, float] = {}
    by_round: dict[str, float] = {}


def spend(fields: dict[str, Any]) -> Spend:
    """Sum the ``cost:<task>`` records of a run hash."""
    out = Spend()
    for key, raw in fields.items():
        if not key.startswith("cost:"):
            continue
        rec = msgspec.json.decode(raw)
        usd = float(rec.get("usd") or 0.0)
        out.usd += usd
        out.input_tokens += int(rec.get("in") or 0)
        out.output_tokens += int(rec.get("out") or 0)
        agent, rnd = str(rec.get("agent") or "?"), str(rec.get("round") or 0)
        out.by_agent[agent] = out.by_agent.get(agent, 0.0) + usd
        out.by_round[rnd] = out.by_round.get(rnd, 0.0) + usd
    out.usd = round(out.usd, 6)
    return out


def run_info(swarm: str, state: loop.RunState, fields: dict[str, Any]) -> RunInfo:
    rounds = [msgspec.json.decode(v) for k, v in sorted(fields.items()) if k.startswith("round:")]
    cost = spend(fields)
    ws: dict[str, Any] = msgspec.json.decode(fields["workspace"]) if "workspace" in fields else {}
    artifacts = {k[len("artifact:") :]: v for k, v in fields.items() if k.startswith("artifact:")}
    return RunInfo(
        mode=fields.get("mode") or None,
        repo=ws.get("repo"),
        base=ws.get("base"),
        checks=list(ws.get("checks", [])),
        compete=state.compete,
        no_change_ok=state.no_change_ok,
        branch=fields.get("result_branch") or None,
        commit=fields.get("result_commit") or None,
        winner=state.winner,
        branches=list(msgspec.json.decode(fields["branches"])) if "branches" in fields else [],
        artifacts=artifacts,
        cost_usd=cost.usd,
        budget_usd=state.budget_usd,
        cost_by_agent=cost.by_agent,
        cost_by_round=cost.by_round,
        input_tokens=cost.input_tokens,
        output_tokens=cost.output_tokens,
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
