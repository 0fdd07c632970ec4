"""The chaos suite's shared parts: sizes, a batch of side-effecting tasks, invariants.

Every scenario runs real processes (redis-server, cfnd, cfn-agent), injects its
fault, then checks the promises the README makes:

- every submitted task ends with exactly one stored result, or in the DLQ with
  its reason (``lost`` counts those that did neither);
- no side effect is re-run by cfn except for tasks in flight on an agent that was
  killed (``our_reruns`` counts the others);
- cfnd and Redis memory stay bounded.

Each task appends ``<task id> <attempt> <agent id>`` to an effects file, so
re-runs are counted from what actually happened, not from what cfn reports.
Figures go to ``$CFN_CHAOS_RESULTS/<scenario>.json`` when that is set
(``scripts/chaos`` collects them into docs/RELIABILITY.md).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cfn_client.api import Client
from cfn_client.wire.errors import CfnError
from cfn_client.wire.schema.swarm import TERMINAL_TASK_STATUSES
from tests.waiting import wait_until

# Final states; a dead-lettered task is "failed" (and in the DLQ with its reason).
FINAL = TERMINAL_TASK_STATUSES


@dataclass(frozen=True)
class Scale:
    """How big a run is: CI's bounded form, or the long form of ``scripts/chaos``."""

    long: bool
    tasks: int
    agents: int
    kill_every_s: float
    stall_s: float
    bulk_tasks: int

    @classmethod
    def from_env(cls) -> Scale:
        if os.environ.get("CFN_CHAOS", "short") == "long":
            return cls(True, 2000, 4, 2.0, 15.0, 20_000)
        return cls(False, 150, 3, 2.0, 4.0, 1_000)


@dataclass
class Figures:
    """One scenario's row in docs/RELIABILITY.md."""

    scenario: str
    tasks: int = 0
    succeeded: int = 0
    failed: int = 0  # dead-lettered, with a reason
    lost: int = 0  # neither a result nor a DLQ entry by the deadline
    our_reruns: int = 0  # side effects repeated although no agent running them died
    killed_reruns: int = 0  # repeated because the agent running them was killed
    duplicated_results: int = 0
    recovery_s: list[float] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def recovery_p50_s(self) -> float | None:
        return round(statistics.median(self.recovery_s), 2) if self.recovery_s else None

    @property
    def recovery_max_s(self) -> float | None:
        return round(max(self.recovery_s), 2) if self.recovery_s else None

    def save(self) -> None:
        out = os.environ.get("CFN_CHAOS_RESULTS")
        if not out:
            return
        data = asdict(self)
        data["recovery_p50_s"], data["recovery_max_s"] = self.recovery_p50_s, self.recovery_max_s
        del data["recovery_s"]
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, f"{self.scenario}.json").write_text(json.dumps(data, indent=2) + "\n")

    def assert_promises(self) -> None:
        """The invariants every scenario must hold."""
        assert self.lost == 0, f"{self.lost} tasks lost: {self}"
        assert self.our_reruns == 0, f"{self.our_reruns} side effects re-run by cfn: {self}"
        assert self.duplicated_results == 0, f"results stored twice: {self}"
        assert self.succeeded + self.failed == self.tasks, self


def live_agents(cfn: Client) -> dict[str, int]:
    """Idle or busy agents by id → pid ({} while cfnd cannot answer)."""
    agents = answered(cfn.agent_list)
    if agents is None:
        return {}
    return {a.id: a.pid for a in agents.agents if a.status in ("idle", "busy") and a.pid}


def start_swarm(
    cfn: Client, name: str, agents: int, max_agents: int | None = None
) -> dict[str, int]:
    """A mesh swarm with ``agents`` shell agents, once all registered; their pids."""
    cfn.swarm_init("mesh", max_agents or agents, name=name)
    cfn.agent_create("shell", count=agents)
    return wait_until(
        lambda: (a := live_agents(cfn)) and len(a) == agents and a, 60, f"{agents} agents"
    )


def effect_task(effects: Path, work_s: float = 0.05) -> str:
    """Shell text of a task whose side effect is one line in ``effects``."""
    return f'echo "$CFN_TASK_ID $CFN_ATTEMPT $CFN_AGENT_ID" >> {effects}; sleep {work_s}'


def submit_batch(
    cfn: Client, effects: Path, n: int, work_s: float = 0.05, **kwargs: Any
) -> list[str]:
    return [cfn.task_submit(effect_task(effects, work_s), **kwargs).id for _ in range(n)]


def answered(call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(...)``, or None while cfnd cannot answer (restarting, Redis down)."""
    try:
        return call(*args, **kwargs)
    except (CfnError, OSError):
        return None


def statuses(cfn: Client, ids: Sequence[str]) -> dict[str, Any]:
    return {tid: cfn.task_status(tid) for tid in ids}


def wait_final(socket: Path, ids: Sequence[str], timeout_s: float) -> dict[str, Any]:
    """Every task's final TaskInfo, waiting (bounded) for those still under way."""
    deadline = time.monotonic() + timeout_s
    infos: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with Client(socket, timeout_s=30) as cfn:
            pending = [t for t in ids if t not in infos or infos[t].status not in FINAL]
            for tid in pending:
                info = answered(cfn.task_status, tid)
                if info is not None:
                    infos[tid] = info
            if all(t in infos and infos[t].status in FINAL for t in ids):
                return infos
        time.sleep(0.2)  # poll: other processes finish the work
    return infos


def effects_of(effects: Path) -> dict[str, list[tuple[int, str]]]:
    runs: dict[str, list[tuple[int, str]]] = defaultdict(list)
    if effects.exists():
        for line in effects.read_text().splitlines():
            tid, attempt, agent = line.split()
            runs[tid].append((int(attempt), agent))
    return runs


def tally(
    name: str,
    ids: Sequence[str],
    infos: dict[str, Any],
    effects: Path,
    killed_agents: Iterable[str] = (),
    succeeded_events: Counter[str] | None = None,
) -> Figures:
    """Count outcomes and re-runs of a batch against the invariants."""
    killed = set(killed_agents)
    fig = Figures(name, tasks=len(ids))
    runs = effects_of(effects)
    for tid in ids:
        info = infos.get(tid)
        status = info.status if info is not None else "missing"
        if status == "succeeded":
            fig.succeeded += 1
        elif status == "failed":
            fig.failed += 1
        else:
            fig.lost += 1
            fig.notes.setdefault("lost", {})[tid] = status
        # Every run but the last needs a killed agent to explain it.
        for _attempt, agent in runs.get(tid, [])[:-1]:
            if agent in killed:
                fig.killed_reruns += 1
            else:
                fig.our_reruns += 1
    if succeeded_events is not None:
        fig.duplicated_results = sum(n - 1 for n in succeeded_events.values() if n > 1)
    return fig


def succeeded_events(cfn: Client, ids: Iterable[str]) -> Counter[str]:
    """How many ``task.succeeded`` events each task got (one result per task: 1)."""
    wanted = set(ids)
    events = cfn.events_list(types=["task.succeeded"], limit=10_000).events
    return Counter(e.data["task"] for e in events if e.data.get("task") in wanted)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pick(rng: random.Random, items: Sequence[str]) -> str:
    return items[rng.randrange(len(items))]
