"""The MCP tools: thin calls through :class:`AsyncClient` to cfnd's socket.

Every tool opens its own connection (cfnd may restart between calls), returns the
daemon's reply as plain JSON data, and turns a ``CfnError`` into an error result
naming the code, the message and what to fix.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import msgspec
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from cfn_client import __version__
from cfn_client.api.async_ import AsyncClient
from cfn_client.mcp_server.errors import error_result_text
from cfn_client.wire.errors import CfnError
from cfn_client.wire.schema.loop import RunInfo
from cfn_client.wire.schema.swarm import AgentRole, Priority, Strategy, Topology

INSTRUCTIONS = """\
cfn coordinates swarms of AI coding agents (cfnd). Typical use: swarm_init once
(or swarm_list to find the current one), then loop_start with a task and
loop_follow_summary with the run id until it is at rest. A run ends done (decision
PROCEED or DEFER), escalated (ask the user, then loop_approve or loop_reject: never
decide alone) or failed. Errors say what to fix."""

SwarmId = Annotated[str | None, Field(description="The swarm's id (default: the only swarm).")]
Complexity = Literal["simple", "medium", "complex", "enterprise"]
Mode = Literal["mvp", "standard", "enterprise"]
LoopLimit = Annotated[int | None, Field(ge=1, le=100)]

#: What the caller does next, by a run's status.
NEXT_STEP = {
    "done": "report the decision; a DEFER's backlog items are follow-ups",
    "escalated": "show the user the feedback and ask; then loop_approve or loop_reject",
    "failed": "show the failing round's feedback; do not retry blindly",
    "cancelled": "the run was cancelled; nothing to do",
}
AT_REST = frozenset(NEXT_STEP)


def run_summary(run: RunInfo) -> dict[str, Any]:
    """The outcome of a run in a few fields, and what to do about it."""
    last = run.rounds[-1] if run.rounds else {}
    return {
        "run": run.id,
        "swarm": run.swarm,
        "status": run.status,
        "decision": run.decision,
        "at_rest": run.status in AT_REST,
        "loop2_rounds": run.loop2_round,
        "loop3_iterations": run.loop3_iteration,
        "last_round": last,
        "outcome_reason": run.outcome_reason,
        "feedback": run.feedback,
        "backlog": run.backlog,
        "branch": run.branch,
        "cost_usd": run.cost_usd,
        "next": NEXT_STEP.get(run.status, "still running: call loop_follow_summary again"),
    }


def build_server(socket_path: Path, timeout_s: float) -> MCPServer:
    """An MCP server whose tools act on the cfnd behind ``socket_path``."""
    server: MCPServer = MCPServer("cfn", instructions=INSTRUCTIONS, version=__version__)

    async def call(fn: Callable[[AsyncClient], Awaitable[object]]) -> dict[str, Any]:
        try:
            async with AsyncClient(socket_path, timeout_s=timeout_s) as cfn:
                doc: dict[str, Any] = msgspec.to_builtins(await fn(cfn))
                return doc
        except CfnError as err:
            raise ToolError(error_result_text(err)) from None

    # --------------------------------------------------------------- swarms

    @server.tool()
    async def swarm_init(
        topology: Topology,
        max_agents: Annotated[int, Field(ge=2, le=50)],
        strategy: Strategy = "balanced",
        name: Annotated[str | None, Field(pattern=r"^[a-z0-9_-]{1,64}$")] = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Create a swarm (TOPOLOGY mesh|hierarchical|ring|star, 2-50 agents)."""
        return await call(
            lambda c: c.swarm_init(topology, max_agents, strategy=strategy, name=name, force=force)
        )

    @server.tool()
    async def swarm_list() -> dict[str, Any]:
        """The swarms cfnd holds."""
        return await call(lambda c: c.swarm_list())

    @server.tool()
    async def swarm_status(swarm: SwarmId = None, verbose: bool = False) -> dict[str, Any]:
        """A swarm with its agents, queue lengths and task counts."""
        return await call(lambda c: c.swarm_status(swarm, verbose))

    @server.tool()
    async def swarm_scale(
        agents: Annotated[int, Field(ge=0, le=50)],
        swarm: SwarmId = None,
        type: str = "shell",
        force: bool = False,
    ) -> dict[str, Any]:
        """Scale a swarm to AGENTS agents: up spawns TYPE agents, down drains idle ones."""
        return await call(lambda c: c.swarm_scale(agents, swarm=swarm, type=type, force=force))

    @server.tool()
    async def swarm_destroy(swarm: SwarmId = None, force: bool = False) -> dict[str, Any]:
        """Stop a swarm's agents and delete it (force: even with busy agents)."""
        return await call(lambda c: c.swarm_destroy(swarm, force))

    # --------------------------------------------------------------- agents

    @server.tool()
    async def agent_create(
        type: str,
        swarm: SwarmId = None,
        task: str | None = None,
        role: AgentRole | None = None,
        count: Annotated[int, Field(ge=1, le=50)] = 1,
    ) -> dict[str, Any]:
        """Start COUNT agents of an agent type (a [agent_types] name in cfnd's config)."""
        return await call(
            lambda c: c.agent_create(type, swarm=swarm, task=task, role=role, count=count)
        )

    @server.tool()
    async def agent_list(swarm: SwarmId = None, status: str | None = None) -> dict[str, Any]:
        """A swarm's agents (status: idle, busy, ...)."""
        return await call(lambda c: c.agent_list(swarm, status))

    @server.tool()
    async def agent_terminate(
        agent: str, swarm: SwarmId = None, force: bool = False
    ) -> dict[str, Any]:
        """Stop an agent once idle (force: now, failing its current task over)."""
        return await call(lambda c: c.agent_terminate(agent, swarm, force))

    # ---------------------------------------------------------------- tasks

    @server.tool()
    async def task_run(
        text: str,
        type: str = "shell",
        priority: Priority = "normal",
        timeout_s: Annotated[float | None, Field(gt=0)] = None,
        swarm: SwarmId = None,
    ) -> dict[str, Any]:
        """Queue one task for agents of TYPE; task_status follows it."""
        return await call(
            lambda c: c.task_submit(
                text, swarm=swarm, type=type, priority=priority, timeout_s=timeout_s
            )
        )

    @server.tool()
    async def task_status(task: str, swarm: SwarmId = None) -> dict[str, Any]:
        """One task: its status, attempts, output."""
        return await call(lambda c: c.task_status(task, swarm))

    # ----------------------------------------------------------------- loop

    @server.tool()
    async def loop_start(
        task: str,
        implementers: list[str] | None = None,
        validators: list[str] | None = None,
        owner: str | None = None,
        complexity: Complexity | None = None,
        mode: Mode | None = None,
        max_loop2: LoopLimit = None,
        max_loop3: LoopLimit = None,
        repo: str | None = None,
        swarm: SwarmId = None,
    ) -> dict[str, Any]:
        """Start a CFN loop run of TASK: implementers until confidence passes the gate,
        validators' consensus, then the product owner's decision. Returns the run (its
        id for loop_follow_summary). Agent types default to a team sized by complexity."""
        return await call(
            lambda c: c.loop_start(
                task, swarm=swarm, implementers=implementers, validators=validators,
                owner=owner, complexity=complexity, mode=mode, max_loop2=max_loop2,
                max_loop3=max_loop3, repo=repo,
            )
        )  # fmt: skip

    @server.tool()
    async def loop_status(run: str, swarm: SwarmId = None) -> dict[str, Any]:
        """A run in full: state, rounds with votes and feedback, decision, cost."""
        return await call(lambda c: c.loop_status(run, swarm))

    @server.tool()
    async def loop_list(swarm: SwarmId = None, status: str | None = None) -> dict[str, Any]:
        """A swarm's runs (status: loop3, loop2, escalated, done, failed, ...)."""
        return await call(lambda c: c.loop_list(swarm, status=status))

    @server.tool()
    async def loop_follow_summary(
        run: str,
        swarm: SwarmId = None,
        wait_s: Annotated[float, Field(gt=0, le=3600)] = 600.0,
    ) -> dict[str, Any]:
        """Wait (up to WAIT_S) until the run is at rest — done, escalated, failed or
        cancelled — and return its outcome with what to do next."""

        async def follow(c: AsyncClient) -> dict[str, Any]:
            with anyio.move_on_after(wait_s):
                async with c.loop_follow(run, swarm) as events:
                    async for _ in events:
                        pass
            return run_summary(await c.loop_status(run, swarm))

        return await call(follow)

    @server.tool()
    async def loop_approve(run: str, reason: str = "", swarm: SwarmId = None) -> dict[str, Any]:
        """Approve an escalated run (only when the user said so)."""
        return await call(lambda c: c.loop_approve(run, reason, swarm=swarm))

    @server.tool()
    async def loop_reject(run: str, feedback: str = "", swarm: SwarmId = None) -> dict[str, Any]:
        """Reject an escalated run: a new validator round starts with FEEDBACK."""
        return await call(lambda c: c.loop_reject(run, feedback, swarm=swarm))

    @server.tool()
    async def loop_apply(
        run: str,
        how: Literal["merge", "squash", "patch"] = "merge",
        file: str | None = None,
        repo: str | None = None,
        swarm: SwarmId = None,
    ) -> dict[str, Any]:
        """Bring a passed run's result into the repository (merge, squash or a patch FILE)."""
        return await call(lambda c: c.loop_apply(run, how, file=file, repo=repo, swarm=swarm))

    # --------------------------------------------------------------- daemon

    @server.tool()
    async def cfn_status(verbose: bool = False) -> dict[str, Any]:
        """cfnd's health and metrics: Redis mode and latency, swarm, agent and task counts."""
        return await call(lambda c: c.status(verbose))

    return server
