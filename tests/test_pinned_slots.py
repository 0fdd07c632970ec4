"""Pinned CFN tasks follow their agent's replacement (issue 9, part 3): the pin names a
slot, not a process. Real cfnd, real cfn-agent processes, the example agents."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from cfn_client.api import AsyncClient
from tests.conftest import DaemonFactory
from tests.test_loop_integration import EXAMPLES
from tests.test_swarm_integration import next_event

FAST = {
    "agents.heartbeat_interval_s": 0.2,
    "agents.lapse_s": 3.0,
    "agents.stop_grace_s": 1.0,
    "agents.restart_backoff_s": 0.05,
    "tasks.retry_base_s": 0.05,
}

# Runs the example agent, except the first time: then it hangs (and gets killed), and
# tells the test which agent runs it. The marker is claimed with O_EXCL: two validators
# start their tasks within milliseconds, and a check-then-create let both hang (the run
# then waited on the unkilled one and never finished).
STALL_ONCE = """
import os, runpy, sys, time
try:
    os.close(os.open(os.environ["STALL_MARKER"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
except FileExistsError:
    pass
else:
    with open(os.environ["STALL_FIFO"], "w") as fifo:  # tell the test it runs now, where
        fifo.write(os.environ["CFN_AGENT_ID"])
    time.sleep(120)
sys.argv = [os.environ["STALL_SCRIPT"]]
runpy.run_path(os.environ["STALL_SCRIPT"], run_name="__main__")
"""


def stalling_types(tmp_path: Path, stall: str) -> str:
    """``impl`` and ``check`` agent types; the first task of ``stall`` hangs."""
    wrapper = tmp_path / "stall_once.py"
    wrapper.write_text(STALL_ONCE)

    def table(name: str, script: str, role: str) -> str:
        env = {"STALL_SCRIPT": str(EXAMPLES / script), "STALL_MARKER": str(tmp_path / "none")}
        if name == stall:
            env["STALL_MARKER"] = str(tmp_path / "stalled")
            env["STALL_FIFO"] = str(tmp_path / "stalled.fifo")
        argv = (
            [sys.executable, str(wrapper)]
            if name == stall
            else [sys.executable, str(EXAMPLES / script)]
        )
        env_toml = ", ".join(f'{k} = "{v}"' for k, v in env.items())
        exec_toml = ", ".join(f'"{a}"' for a in argv)
        return (
            f'[agent_types.{name}]\nkind = "command"\nexec = [{exec_toml}]\n'
            f'role = "{role}"\nenv = {{ {env_toml} }}\n'
        )

    return table("impl", "implementer.py", "implementer") + table(
        "check", "validator.py", "validator"
    )


async def stalled_agent(fifo: Path) -> str:
    """The id of the agent whose task process claimed the stall (it writes it to ``fifo``)."""
    return await asyncio.wait_for(asyncio.to_thread(fifo.read_text), 30)


async def _kill_the_stalled_agent_and_finish(
    daemon_factory: DaemonFactory, tmp_path: Path, stall: str, kind: str
) -> None:
    os.mkfifo(tmp_path / "stalled.fifo")
    d = await daemon_factory(config_text=stalling_types(tmp_path, stall), **FAST)
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=8, name="slots")
        async with cfn.events_follow(types=["task", "agent", "loop"]) as events:
            run = await cfn.call(
                "loop.start", task="add a health endpoint", implementers=["impl"],
                validators=["check", "check"],
            )  # fmt: skip
            # The agent whose task process claimed the stall (runs, and hangs), not merely
            # the first to start a task of that kind: a twin may have started first.
            victim = await stalled_agent(tmp_path / "stalled.fifo")
            stalled = [
                t
                for t in (await cfn.call("task.list", limit=1000)).tasks
                if t.id.startswith(run.id) and t.agent == victim and t.status == "running"
            ]
            assert [t.context.get("kind") for t in stalled] == [kind], stalled
            info = await cfn.call("agent.status", agent=victim)
            os.killpg(info.pid, signal.SIGKILL)
            replaced = await next_event(events, "agent.replaced", agent=victim)
            assert replaced.data["slot"] == victim
            finished = await next_event(events, "loop.finished", run=run.id)
        assert finished.data["status"] == "done", finished.data
        final = await cfn.call("loop.status", run=run.id)
        assert final.status == "done"
        # The run still names the slot; the replacement did the slot's work.
        assert victim in final.implementers + final.validators
        tasks = [t for t in (await cfn.call("task.list", limit=1000)).tasks if t.target == victim]
        assert tasks and all(t.status == "succeeded" for t in tasks)
        assert {t.agent for t in tasks} == {replaced.data["replacement"]}
        # Once the dead original's record is forgotten, its slot still resolves.
        registry = d.swarms.registry
        await registry.forget(run.swarm, victim)
        filling = await registry.slot(run.swarm, victim)
        assert filling.id == replaced.data["replacement"]
        if kind == "validate":
            votes = [e.data for e in (await cfn.call("events.list", types=["loop.vote"])).events]
            mine = [v for v in votes if v["validator"] == victim]
            assert mine and all(v["verified"] for v in mine)  # signed, and counted


async def test_killed_implementers_pinned_task_follows_its_replacement(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    await _kill_the_stalled_agent_and_finish(daemon_factory, tmp_path, "impl", "implement")


async def test_killed_validators_vote_comes_from_its_replacement(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    await _kill_the_stalled_agent_and_finish(daemon_factory, tmp_path, "check", "validate")


async def test_stall_once_hangs_exactly_one_of_two_concurrent_runs(tmp_path: Path) -> None:
    """The tests above kill the one agent whose task hangs: with two validators starting
    their tasks at once, exactly one process may claim the stall, and it names itself."""
    wrapper = tmp_path / "stall_once.py"
    wrapper.write_text(STALL_ONCE)
    script = tmp_path / "ran.py"
    script.write_text("print('ran')\n")
    os.mkfifo(tmp_path / "stalled.fifo")
    env = os.environ | {
        "STALL_SCRIPT": str(script),
        "STALL_MARKER": str(tmp_path / "stalled"),
        "STALL_FIFO": str(tmp_path / "stalled.fifo"),
    }
    procs = {
        agent: await asyncio.create_subprocess_exec(
            sys.executable,
            str(wrapper),
            env=env | {"CFN_AGENT_ID": agent},
            stdout=asyncio.subprocess.PIPE,
        )
        for agent in ("check-a", "check-b")
    }
    try:
        victim = await stalled_agent(tmp_path / "stalled.fifo")
        assert victim in procs
        (other,) = set(procs) - {victim}
        out, _ = await asyncio.wait_for(procs[other].communicate(), 30)
        assert (procs[other].returncode, out) == (0, b"ran\n")  # it ran the real script
        assert procs[victim].returncode is None  # the claimer hangs
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
            await proc.communicate()
