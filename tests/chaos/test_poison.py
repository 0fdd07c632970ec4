"""Scenario 4: poison tasks (NUL, NaN, huge text, self-destructing commands, binary
output) mixed into a batch: each gets a specific error or fails as a task; no agent
dies and every good task succeeds."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cfn_client.api import Client
from cfn_client.wire.errors import CfnError
from tests.chaos.harness import Scale, effect_task, start_swarm, succeeded_events, tally, wait_final
from tests.daemon_proc import CfndProcess

# Refused at the wire with a specific error, or stored and failed as a task.
POISON: dict[str, dict[str, Any]] = {
    "nul_text": {"text": "echo a\x00b"},
    "nan_timeout": {"text": "echo nan", "timeout_s": math.nan},
    "inf_timeout": {"text": "echo inf", "timeout_s": math.inf},
    "huge_text": {"text": "#" + "x" * (2 << 20)},
    "kills_its_shell": {"text": "kill -9 $$"},
    "kills_its_group": {"text": "kill -TERM 0; sleep 5"},
    "nul_output": {"text": "printf 'a\\000b\\000'"},
    "binary_output": {"text": "head -c 4096 /dev/urandom"},
    "closes_stdout": {"text": "exec 1>&- 2>&-; sleep 0.1"},
    "zero_attempts": {"text": "echo zero", "max_attempts": 0},
}


SPECIFIC = {"invalid_args", "frame_too_large"}


def submit(cfn: Client, args: dict[str, Any]) -> tuple[str | None, str]:
    """(task id, "") when accepted, else (None, the error code)."""
    try:
        return cfn.task_submit(**{"max_attempts": 1, **args}).id, ""
    except CfnError as exc:
        return None, exc.code


def test_poison_tasks_mixed_into_a_batch(
    chaos_cfnd: Callable[..., CfndProcess], scale: Scale, tmp_path: Path
) -> None:
    proc = chaos_cfnd()
    effects = tmp_path / "effects"
    refused: dict[str, str] = {}
    accepted: dict[str, str] = {}
    good: list[str] = []
    with Client(proc.socket, timeout_s=60) as cfn:
        pids = start_swarm(cfn, "poison", scale.agents)
        rounds = 10 if scale.long else 1
        for _ in range(rounds):
            for name, args in POISON.items():
                task_id, code = submit(cfn, args)
                if task_id is None:
                    refused[name] = code
                else:
                    accepted[task_id] = name
            good += [cfn.task_submit(effect_task(effects, 0.01)).id for _ in range(10)]
    infos = wait_final(proc.socket, good + list(accepted), 180)
    with Client(proc.socket, timeout_s=60) as cfn:
        fig = tally("poison", good, infos, effects, (), succeeded_events(cfn, good))
        fig.notes = {
            "refused": dict(sorted(refused.items())),
            "accepted": sorted(set(accepted.values())),
            "poison_outcomes": sorted({f"{accepted[t]}:{infos[t].status}" for t in accepted}),
            "poison_s": {
                accepted[t]: round((infos[t].updated_ms - infos[t].created_ms) / 1000, 2)
                for t in accepted
            },
        }
        # No agent died or was replaced on the way.
        after = {a.id: a.pid for a in cfn.agent_list().agents if a.status in ("idle", "busy")}
    fig.save()
    fig.assert_promises()
    assert after == pids, f"agents died: {fig.notes}"
    assert {"nul_text", "nan_timeout", "inf_timeout", "zero_attempts"} <= set(refused)
    # Refusals say what was wrong: never a dropped connection or an internal error.
    assert set(refused.values()) <= SPECIFIC, refused
    assert proc.proc is not None and proc.proc.poll() is None
    assert proc.stop() == 0
