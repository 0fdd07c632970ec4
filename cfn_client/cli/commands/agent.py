"""``cfnctl agent``: create, inspect, stop, restart and message agents."""

from __future__ import annotations

import click

from cfn_client.cli import completion as complete
from cfn_client.cli import render
from cfn_client.cli.env import CliEnv, choice_of, pass_env
from cfn_client.wire.schema.swarm import AgentRole, AgentStatus


@click.group()
def agent() -> None:
    """Create, inspect, stop, restart and message the current swarm's agents."""


@agent.command("create")
@click.argument("agent_type", metavar="TYPE")
@click.argument("task", required=False)
@click.option("--role", type=choice_of(AgentRole), help="The agent's role in the swarm.")
@click.option(
    "--capability", "capabilities", multiple=True, metavar="X",
    help="A capability (repeatable).",
)  # fmt: skip
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True)
@pass_env
def create(
    env: CliEnv, agent_type: str, task: str | None, role: AgentRole | None,
    capabilities: tuple[str, ...], count: int,
) -> None:  # fmt: skip
    """Spawn agents of TYPE (e.g. shell), optionally starting on TASK."""
    result = env.call(
        lambda c: c.agent_create(
            agent_type,
            swarm=env.swarm,
            task=task,
            role=role,
            capabilities=capabilities,
            count=count,
        )
    )
    env.emit(result, lambda: render.agents_table(result.agents))


@agent.command("list")
@click.option("--status", type=choice_of(AgentStatus), help="Only agents in this state.")
@pass_env
def list_(env: CliEnv, status: str | None) -> None:
    """List the swarm's agents."""
    result = env.call(lambda c: c.agent_list(env.swarm, status=status))
    env.emit(result, lambda: render.agents_table(result.agents) if result.agents else "no agents")


@agent.command("status")
@click.argument("agent_id", metavar="ID", shell_complete=complete.agent_ids)
@pass_env
def status(env: CliEnv, agent_id: str) -> None:
    """Show one agent."""
    result = env.call(lambda c: c.agent_status(agent_id, env.swarm))
    env.emit(result, lambda: render.agent_info(result))


@agent.command("terminate")
@click.argument("agent_id", metavar="ID", shell_complete=complete.agent_ids)
@click.option("--force", is_flag=True, help="Stop it even while it runs a task.")
@pass_env
def terminate(env: CliEnv, agent_id: str, force: bool) -> None:
    """Stop an agent (once its current task is done, unless --force)."""
    result = env.call(lambda c: c.agent_terminate(agent_id, env.swarm, force=force))
    env.emit(result, lambda: render.agent_change(result, "terminated"))


@agent.command("restart")
@click.argument("agent_id", metavar="ID", shell_complete=complete.agent_ids)
@pass_env
def restart(env: CliEnv, agent_id: str) -> None:
    """Replace an agent by a fresh one of the same type and role (its task is requeued)."""
    result = env.call(lambda c: c.agent_restart(agent_id, env.swarm))
    env.emit(result, lambda: render.agent_change(result, "restarted", agent_id))


@agent.command("reset")
@click.argument("agent_id", metavar="ID", shell_complete=complete.agent_ids)
@pass_env
def reset(env: CliEnv, agent_id: str) -> None:
    """Give an agent's assigned and running tasks back to the queue and clear its load."""
    result = env.call(lambda c: c.agent_reset(agent_id, env.swarm))
    env.emit(result, lambda: render.agent_change(result, "reset"))


@agent.command("send")
@click.argument("from_agent", metavar="FROM", shell_complete=complete.agent_ids)
@click.argument("to_agent", metavar="TO", shell_complete=complete.agent_ids)
@click.argument("message")
@pass_env
def send(env: CliEnv, from_agent: str, to_agent: str, message: str) -> None:
    """Send MESSAGE from agent FROM to agent TO; prints the path it took (a1 -> hub -> a3)."""
    result = env.call(lambda c: c.agent_send(from_agent, to_agent, message, env.swarm))
    env.emit(result, lambda: render.delivery_paths(result))
