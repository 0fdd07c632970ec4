"""``cfnctl swarm``: create, inspect, scale and remove swarms; broadcast to their agents."""

from __future__ import annotations

import contextlib

import click
import msgspec

from cfn_client.cli import completion as complete
from cfn_client.cli import context, render
from cfn_client.cli.env import CliEnv, Duration, choice_of, pass_env
from cfn_client.cli.progress import progress
from cfn_client.wire.errors import CfnError
from cfn_client.wire.schema.swarm import (
    MAX_AGENTS,
    MAX_TEST_TTL_S,
    MIN_AGENTS,
    Strategy,
    Topology,
)


@click.group()
def swarm() -> None:
    """Create, inspect, scale and remove swarms.

    Commands act on the current swarm: --swarm ID (or $CFN_SWARM), else the one
    chosen with `swarm use` or initialised last, else the only swarm there is.
    """


def _check_max_agents(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    # A clear usage error early; cfnd still checks (its configured limit may be lower).
    if value is not None and not MIN_AGENTS <= value <= MAX_AGENTS:
        raise click.BadParameter(
            f"a swarm has {MIN_AGENTS} to {MAX_AGENTS} agents, not {value}", ctx, param
        )
    return value


@swarm.command("init")
@click.argument("topology", type=choice_of(Topology), metavar="[TOPOLOGY]", required=False)
@click.argument(
    "max_agents", type=int, callback=_check_max_agents, metavar="[MAX_AGENTS]", required=False
)
@click.option(
    "--strategy", type=choice_of(Strategy), default=None,
    help="How tasks are spread over agents [default: cfnd's swarm.strategy, balanced].",
)  # fmt: skip
@click.option(
    "--name", metavar="NAME",
    help="The swarm's id: a-z, 0-9, - and _ [default: swarm-<random>].",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Replace an existing swarm of that name.")
@click.option(
    "--test-mode", is_flag=True,
    help="An ephemeral swarm: removed when cfnd stops, after --ttl, or at the next start "
    "if cfnd died.",
)  # fmt: skip
@click.option(
    "--ttl", "ttl_s", type=Duration(), metavar="DURATION",
    help="How long a --test-mode swarm lives (e.g. 30m, 2h) [default: 1h; at most 7d].",
)  # fmt: skip
@pass_env
def init(
    env: CliEnv, topology: Topology | None, max_agents: int | None, strategy: Strategy | None,
    name: str | None, force: bool, test_mode: bool, ttl_s: float | None,
) -> None:  # fmt: skip
    """Create a swarm: TOPOLOGY is mesh, hierarchical, ring or star; MAX_AGENTS is 2-50.

    Left out, they are cfnd's swarm.topology and swarm.max_agents (`cfnctl config show swarm`).
    """
    if ttl_s is not None and not test_mode:
        raise click.UsageError("--ttl is how long a --test-mode swarm lives; add --test-mode")
    if ttl_s is not None and not 0 < ttl_s <= MAX_TEST_TTL_S:
        raise click.BadParameter("expected more than 0s and at most 7d", param_hint="--ttl")
    result = env.call(
        lambda c: c.swarm_init(
            topology, max_agents, strategy=strategy, name=name, force=force,
            test_mode=test_mode, ttl_s=ttl_s,
        )
    )  # fmt: skip
    remember(env, result.id)  # the last one initialised is the current one
    env.emit(result, lambda: render.swarm_init(result))


@swarm.command("use")
@click.argument("swarm_id", metavar="ID", shell_complete=complete.swarm_ids)
@pass_env
def use(env: CliEnv, swarm_id: str) -> None:
    """Make swarm ID the current one: later commands act on it without --swarm.

    Kept per daemon (socket) in $CFN_CONTEXT_FILE [default:
    $XDG_CONFIG_HOME/cfn/context.json]; --swarm and $CFN_SWARM still win.
    """
    result = env.call(lambda c: c.swarm_status(swarm_id))  # NotFound names the existing ones
    try:
        path = context.use_swarm(env.socket, result.swarm.id)
    except OSError as exc:
        raise CfnError(
            f"cannot write the context file {context.context_path()}: {exc.strerror}; "
            "set CFN_CONTEXT_FILE to a writable path, or use --swarm / CFN_SWARM",
            details={"file": str(context.context_path())},
        ) from None
    env.emit(
        {"swarm": result.swarm.id, "context_file": str(path)},
        lambda: f"swarm {result.swarm.id} is now the current swarm",
    )


def remember(env: CliEnv, swarm_id: str) -> None:
    """Make ``swarm_id`` current; an unwritable context file only costs a note (the
    swarm exists either way, and --swarm still reaches it)."""
    try:
        context.use_swarm(env.socket, swarm_id)
    except OSError as exc:
        env.warn(
            f"could not record {swarm_id} as the current swarm in {context.context_path()} "
            f"({exc.strerror}); use --swarm {swarm_id}"
        )


def current_of(env: CliEnv, ids: list[str]) -> str | None:
    """Which of ``ids`` commands act on without --swarm (None: they need one)."""
    if env.swarm_flag is not None:
        return env.swarm_flag if env.swarm_flag in ids else None
    chosen = context.current_swarm(env.socket)
    if chosen in ids:
        return chosen
    return ids[0] if len(ids) == 1 else None


@swarm.command("list")
@pass_env
def list_(env: CliEnv) -> None:
    """List every swarm; * marks the current one."""
    result = env.call(lambda c: c.swarm_list())
    current = current_of(env, [s.id for s in result.swarms])
    env.emit(
        {**msgspec.to_builtins(result), "current": current},
        lambda: render.swarm_list(result, current),
    )


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
@click.argument("agents", type=click.IntRange(min=0, max=MAX_AGENTS), metavar="N")
@click.option("--type", "agent_type", default="shell", show_default=True, help="Agent type.")
@click.option("--force", is_flag=True, help="Stop busy agents too when scaling down.")
@pass_env
def scale(env: CliEnv, agents: int, agent_type: str, force: bool) -> None:
    """Scale the swarm to N agents (0-50).

    N above the swarm's MAX_AGENTS raises that cap to N.
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
    with contextlib.suppress(OSError):  # a stale entry is harmless: it is checked on use
        context.forget_swarm(env.socket, result.swarm)
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
