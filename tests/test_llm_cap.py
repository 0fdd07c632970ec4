"""``[agents] max_llm_processes``: one cap on LLM CLI processes across every swarm.

Real cfn-agent processes run an agent type of kind ``claude`` whose binary is a
stand-in that logs its start, blocks until the test opens its gate, logs its end and
prints Claude's JSON result envelope.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from cfn_client.api import AsyncClient
from cfn_daemon.app import Daemon
from cfn_daemon.store.keys import DISPATCH_GROUP
from cfn_daemon.swarm import dispatcher
from tests.conftest import DaemonFactory

SWARMS = ("cap-a", "cap-b")
# Quick heartbeats, but a lapse that five agents starting at once stay well within.
FLAGS = {"agents.heartbeat_interval_s": 0.2, "agents.lapse_s": 10.0, "agents.stop_grace_s": 1.0}
TIMEOUT_S = 20.0

FAKE_LLM = """#!{python}
import json, os, sys, time

tid = os.environ["CFN_TASK_ID"]


def note(what):
    fd = os.open({log!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"{{what}} {{tid}}\\n".encode())
    os.close(fd)


note("start")
gate = os.path.join({gates!r}, tid)
deadline = time.monotonic() + 120
while not os.path.exists(gate):
    if time.monotonic() > deadline:
        sys.exit("fake llm: the gate never opened")
    time.sleep(0.01)
note("end")
print(json.dumps({{"type": "result", "subtype": "success", "is_error": False,
                  "result": "done " + tid, "session_id": "s-" + tid,
                  "total_cost_usd": 0.0, "num_turns": 1}}))
"""


async def until(d: Daemon, check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Until ``check()`` holds: re-checked on every change announced in either swarm
    (and every 50 ms for state that announces nothing); fails after TIMEOUT_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT_S
    while True:
        pulses = [d.swarms.hub.pulses(s) for s in SWARMS]
        changed = [e for p in pulses for e in (p.work.current(), p.events.current())]
        if await check():
            return
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"timed out after {TIMEOUT_S} s waiting for {what}")
        waits = [asyncio.ensure_future(e.wait()) for e in changed]
        await asyncio.wait(waits, timeout=min(left, 0.05), return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()


def max_overlap(log: Path) -> int:
    """The most fake LLM processes that were running at once (the log is in order)."""
    running = peak = 0
    for line in log.read_text().splitlines():
        running += 1 if line.startswith("start ") else -1
        peak = max(peak, running)
    return peak


async def test_llm_processes_are_capped_across_swarms(
    daemon_factory: DaemonFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a wake-up can start the waiting work in time, not the dispatcher's recheck.
    monkeypatch.setattr(dispatcher, "RECHECK_S", 60.0)
    log, gates = tmp_path / "llm.log", tmp_path / "gates"
    gates.mkdir()
    fake = tmp_path / "fake-llm"
    fake.write_text(FAKE_LLM.format(python=sys.executable, log=str(log), gates=str(gates)))
    fake.chmod(0o755)
    config = (
        f'[agents]\nmax_llm_processes = 2\n[agent_types.llm]\nkind = "claude"\nbinary = "{fake}"\n'
    )
    d = await daemon_factory(config_text=config, **FLAGS)
    a, b = SWARMS
    try:
        async with AsyncClient(d.socket_path, timeout_s=60) as cfn:

            async def status(swarm: str, tid: str) -> str:
                return str((await cfn.call("task.status", task=tid, swarm=swarm)).status)

            async def statuses(swarm: str, ids: list[str]) -> list[str]:
                return [await status(swarm, t) for t in ids]

            def processes() -> set[str]:
                """The tasks whose fake LLM process runs now (it logs before it works)."""
                words = log.read_text().split() if log.exists() else []
                notes = list(zip(words[::2], words[1::2], strict=True))
                return {t for w, t in notes if w == "start"} - {t for w, t in notes if w == "end"}

            for swarm in SWARMS:
                await cfn.call("swarm.init", topology="mesh", max_agents=4, name=swarm)
                await cfn.call("agent.create", type="llm", count=2, swarm=swarm)
            await cfn.call("agent.create", type="shell", count=1, swarm=b)

            async def all_idle() -> bool:
                agents = [x for s in SWARMS for x in await d.swarms.registry.all(s)]
                return sum(x.status == "idle" for x in agents) == 5

            await until(d, all_idle, "5 idle agents")

            # Swarm a takes the whole cap.
            a_ids = [
                (await cfn.call("task.submit", text=f"a{i}", type="llm", swarm=a)).id
                for i in range(2)
            ]

            async def a_running() -> bool:
                return processes() == set(a_ids) and await statuses(a, a_ids) == ["running"] * 2

            await until(d, a_running, "both tasks of swarm a running")

            # Swarm b has two idle LLM agents, but its LLM tasks must wait.
            b_ids = [
                (await cfn.call("task.submit", text=f"b{i}", type="llm", swarm=b)).id
                for i in range(2)
            ]
            b_dispatch = d.swarms.runtimes[b].dispatcher

            async def b_held() -> bool:
                return b_dispatch.llm_held == 2

            await until(d, b_held, "swarm b holding its 2 LLM tasks back")
            assert await statuses(b, b_ids) == ["queued", "queued"]
            b_agents = [x for x in await d.swarms.registry.all(b) if x.type == "llm"]
            assert [x.load for x in b_agents] == [0, 0]
            assert {p.task_id for p in b_dispatch.backlog.values()} == set(b_ids)
            pending = await d.store.redis.xpending(d.store.keys.queue(b, "normal"), DISPATCH_GROUP)
            assert pending["pending"] == 2  # still in the queue's pending list
            assert d.swarms.llm.total == 2

            # Work of other kinds is not held by the cap.
            shell = await cfn.call("task.submit", text="echo plain", type="shell", swarm=b)
            done = (await cfn.call("task.wait", tasks=[shell.id], swarm=b, timeout_s=30)).tasks
            assert done[0].status == "succeeded"
            assert processes() == set(a_ids)

            # Each LLM process that ends lets exactly one waiting task start.
            (gates / a_ids[0]).touch()

            async def one_started() -> bool:
                now = processes()
                return len(now) == 2 and a_ids[1] in now and not now & {a_ids[0]}

            await until(d, one_started, "one task of swarm b to start once a0 ended")
            assert await status(a, a_ids[0]) == "succeeded"
            (first,) = processes() & set(b_ids)
            assert [await status(b, t) for t in b_ids if t != first] == ["queued"]
            (gates / a_ids[1]).touch()

            async def both_started() -> bool:
                return processes() == set(b_ids)

            await until(d, both_started, "the other task of swarm b to start once a1 ended")
            for tid in b_ids:
                (gates / tid).touch()

            result = await cfn.call("task.wait", tasks=b_ids, swarm=b, timeout_s=30)
            assert [t.status for t in result.tasks] == ["succeeded", "succeeded"]
            assert [t.result.output for t in result.tasks if t.result] == [
                f"done {t}" for t in b_ids
            ]
            result = await cfn.call("task.wait", tasks=a_ids, swarm=a, timeout_s=30)
            assert [t.status for t in result.tasks] == ["succeeded", "succeeded"]

            lines = log.read_text().split()
            assert lines.count("start") == 4 and lines.count("end") == 4
            assert max_overlap(log) == 2  # never more than the cap, and the cap was used

            async def released() -> bool:
                return d.swarms.llm.total == 0

            await until(d, released, "every swarm reporting no LLM load")
    finally:  # a failed test leaves no fake process blocked
        for tid in log.read_text().split()[1::2] if log.exists() else []:
            (gates / tid).touch()
