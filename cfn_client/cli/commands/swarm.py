"""``cfnctl swarm``: create, inspect, scale and remove swarms; broadcast to their agents."""

from __future__ import annotations

import click

from cfn_client.cli import completion as complete
from cfn_client.cli import render
from cfn_client.cli.env import CliEnv, choice_of, pass_env
from cfn_client.cli.progress import progress
from cfn_client.wire.schema.swarm import MAX_AGENTS, MIN_AGENTS, Strategy, Topology


@click.group()
def swarm() -> None:
    """Create, inspect, scale and remove swarms.

    Commands act on the current swarm: --swarm ID (or $CFN_SWARM) before the
    command, else the only swarm there is.
    """


def _check_max_agents(ctx: click.Context, param: click.Parameter, value: int) -> int:
    # A clear usage error early; cfnd still checks (its configured limit may be lower).
    if not MIN_AGENTS <= value <= MAX_AGENTS:
        raise click.BadParameter(
            f"a swarm has {MIN_AGENTS} to {MAX_AGENTS} agents, not {value}", ctx, param
        )
    return value


@swarm.command("init")
@click.argument("topology", type=choice_of(Topology), metavar="TOPOLOGY")
@click.argument("max_agents", type=int, callback=_check_max_agents, metavar="MAX_AGENTS")
@click.option(
    "--strategy", type=choice_of(Strategy), default="balanced", show_default=True,
    help="How tasks are spread over agents.",
)  # fmt: skip
@click.option(
    "--name", metavar="NAME",
    help="The swarm's id: a-z, 0-9, - and _ [default: swarm-<random>].",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Replace an existing swarm of that name.")
@pass_env
def init(
    env: CliEnv, topology: Topology, max_agents: int, strategy: Strategy, name: str | None,
    force: bool,
) -> None:  # fmt: skip
    """Create a swarm: TOPOLOGY is mesh, hierarchical, ring or star; MAX_AGENTS is 2-50."""
    result = env.call(
        lambda c: c.swarm_init(topology, max_agents, strategy=strategy, name=name, force=force)
    )
    env.emit(result, lambda: render.swarm_init(result))


@swarm.command("list")
@pass_env
def list_(env: CliEnv) -> None:
    """List every swarm."""
    result = env.call(lambda c: c.swarm_list())
    env.emit(result, lambda: render.swarm_list(result))


@swarm.command("status")
@click.argument("swarm_id", metavar="[ID]", required=False, shell_complete=complete.swarm_ids)
@click.option("-v", "--verbose", is_flag=True, help="Also show where agents run and more.")
@pass_env
def status(env: CliEnv, swarm_id: str | None, verbose: bool) -> None:
    """Show a swarm (ID, else the current one), its queues, tasks and agents."""
    target = swarm_id or env.swarm
    result = env.call(lambda c: c.swarm_status(target, verbose=verbose))
    env.emit(result, lambda: render.swarm_status(result, verbose))


@swarm.command("scale")
@click.argument("agents", type=click.IntRange(min=0), metavar="N")
@click.option("--type", "agent_type", default="shell", show_default=True, help="Agent type.")
@click.option("--force", is_flag=True, help="Stop busy agents too when scaling down.")
@pass_env
def scale(env: CliEnv, agents: int, agent_type: str, force: bool) -> None:
    """Scale the swarm to N agents.

    Scaling up spawns agents of --type; scaling down drains idle agents first and
    never stops a busy one without --force.
    """
    with progress(f"scaling {_which(env)} to {agents} agents", json_mode=env.json):
        result = env.call(
            lambda c: c.swarm_scale(agents, swarm=env.swarm, type=agent_type, force=force)
        )
    env.emit(result, lambda: render.swarm_scale(result))


@swarm.command("destroy")
@click.option("--force", is_flag=True, help="Stop busy agents too.")
@pass_env
def destroy(env: CliEnv, force: bool) -> None:
    """Stop the swarm's agents and remove the swarm."""
    with progress(f"destroying {_which(env)}: stopping its agents", json_mode=env.json):
        result = env.call(lambda c: c.swarm_destroy(env.swarm, force=force))
    env.emit(result, lambda: render.swarm_destroy(result))


def _which(env: CliEnv) -> str:
    return f"swarm {env.swarm}" if env.swarm else "the swarm"


@swarm.command("reset")
@click.option("--force", is_flag=True, help="Required: confirms the reset.")
@pass_env
def reset(env: CliEnv, force: bool) -> None:
    """Delete every task and agent of the swarm, keeping it (empty) with the same
    settings. Needs --force."""
    if not force:
        raise click.UsageError(
            "swarm reset deletes every task and agent of the swarm; confirm with --force"
        )
    result = env.call(lambda c: c.swarm_reset(env.swarm, force=True))
    env.emit(result, lambda: render.swarm_destroy(result, "reset"))


@swarm.command("broadcast")
@click.argument("message")
@click.option(
    "--from", "from_agent", metavar="AGENT", help="Send as this agent.",
    shell_complete=complete.agent_ids,
)  # fmt: skip
@pass_env
def broadcast(env: CliEnv, message: str, from_agent: str | None) -> None:
    """Send MESSAGE to every agent of the swarm; prints each delivery's path."""
    result = env.call(lambda c: c.swarm_broadcast(message, swarm=env.swarm, from_agent=from_agent))
    env.emit(result, lambda: render.broadcast(result))
