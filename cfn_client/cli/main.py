"""``cfnctl``: the command line of cfnd. Imports only click, msgspec and cfn_client."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from cfn_client import __version__
from cfn_client.cli import render
from cfn_client.cli.commands.agent import agent
from cfn_client.cli.commands.audit import audit, redis
from cfn_client.cli.commands.config import config
from cfn_client.cli.commands.debug import debug
from cfn_client.cli.commands.epic import epic, sprints
from cfn_client.cli.commands.epic import start as epic_start
from cfn_client.cli.commands.events import events
from cfn_client.cli.commands.init import init
from cfn_client.cli.commands.logs import logs
from cfn_client.cli.commands.loop import cfn_loop, loop
from cfn_client.cli.commands.monitor import monitor
from cfn_client.cli.commands.observe import metrics
from cfn_client.cli.commands.snapshot import snapshot
from cfn_client.cli.commands.swarm import swarm
from cfn_client.cli.commands.system import doctor, ping, status, test_group
from cfn_client.cli.commands.task import dlq, run, task
from cfn_client.cli.commands.team import team
from cfn_client.cli.commands.web import web
from cfn_client.cli.completion import completion, swarm_ids
from cfn_client.cli.env import CliEnv, FiniteRange, report_error
from cfn_client.cli.hoist import hoist_output_flags
from cfn_client.conn.base import DEFAULT_TIMEOUT_S
from cfn_client.wire.errors import CfnError
from cfn_client.wire.paths import default_socket_path

# "\b" keeps click from re-wrapping the table.
EPILOG = """\b
Exit codes:
  0  success
  1  cfnd reported an error, or a check failed
  2  usage error
  3  cfnd unreachable (start it with `cfnd` or `systemctl start cfnd`)
  4  permission denied (join the socket's group)
  5  `loop` (followed): the run escalated, a human must approve or reject it
  6  `loop` (followed): the run failed or was cancelled
  7  Redis is unavailable to cfnd right now (store_unavailable); retry shortly,
     or refused a command cfn needs (store_denied: fix its ACL user)
"""


class CfnGroup(click.Group):
    """The root group: turns any ``CfnError`` into one message and its exit code."""

    # Exit-code contract: CfnError subclasses carry their exit_code (1, 3, 4, 7); click usage
    # errors exit 2; "Aborted!" (declined prompt, Ctrl-C) exits 1.

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # --json / --format after the subcommand belong to the root (unless it owns one).
        if ctx.parent is None:
            args = hoist_output_flags(self, ctx, args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CfnError as err:
            env = ctx.find_object(CliEnv)
            report_error(err, json_mode=env.json if env else False)
            ctx.exit(err.exit_code)
        except click.ClickException as exc:
            # A subcommand's bad argument, once --json is known: scripts still get JSON.
            env = ctx.find_object(CliEnv)
            if env is None or not env.json:
                raise
            code = "usage_error" if isinstance(exc, click.UsageError) else "cli_error"
            doc = render.cli_error_document(code, exc.format_message(), exc.exit_code)
            click.echo(render.to_json(doc))
            ctx.exit(exc.exit_code)


@click.group(cls=CfnGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path, readable=False),  # checked by connect, with advice
    default=None,
    metavar="PATH",
    help="cfnd's socket [default: $CFN_SOCKET, else /run/cfn/cfnd.sock as root, "
    "$XDG_RUNTIME_DIR/cfn/cfnd.sock otherwise].",
)
@click.option(
    "--json", "json_output", is_flag=True,
    help="Print JSON (one document) for scripts; may come anywhere on the line.",
)  # fmt: skip
@click.option(
    "--format", "output_format", type=click.Choice(["table", "json", "csv"]), default=None,
    help="Output: table (for people, the default), json (as --json) or csv (list-like "
    "results, RFC 4180); may come anywhere on the line, unless the command has its own.",
)  # fmt: skip
@click.option(
    "--timeout",
    type=FiniteRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for each reply (waits and follows add their own time).",
)
@click.option(
    "--swarm",
    "swarm_id",
    envvar="CFN_SWARM",
    default=None,
    metavar="ID",
    shell_complete=swarm_ids,
    help="The swarm to act on [default: $CFN_SWARM, else the current swarm (`swarm use`, "
    "or the last `swarm init`), else the only swarm].",
)
@click.version_option(
    __version__, "-V", "--version", prog_name="cfnctl", message="%(prog)s %(version)s"
)
@click.pass_context
def cfnctl(
    ctx: click.Context,
    socket_path: Path | None,
    json_output: bool,
    output_format: str | None,
    timeout: float,
    swarm_id: str | None,
) -> None:
    """Control cfnd, the coordinator of AI-agent swarms."""
    if json_output and output_format not in (None, "json"):
        raise click.UsageError(f"--json and --format {output_format} disagree; give one")
    fmt = "json" if json_output else (output_format or "table")
    ctx.obj = CliEnv(
        socket=socket_path or default_socket_path(),
        json=fmt == "json",
        format=fmt,
        timeout_s=timeout,
        swarm_flag=swarm_id or None,
    )


cfnctl.add_command(status)
cfnctl.add_command(ping)
cfnctl.add_command(doctor)
cfnctl.add_command(test_group)
cfnctl.add_command(config)
cfnctl.add_command(swarm)
cfnctl.add_command(agent)
cfnctl.add_command(team)
cfnctl.add_command(run)
cfnctl.add_command(task)
cfnctl.add_command(dlq)
cfnctl.add_command(events)
cfnctl.add_command(monitor)
cfnctl.add_command(metrics)
cfnctl.add_command(debug)
cfnctl.add_command(logs)
cfnctl.add_command(snapshot)
cfnctl.add_command(audit)
cfnctl.add_command(redis)
cfnctl.add_command(loop)
cfnctl.add_command(cfn_loop)
cfnctl.add_command(epic)
cfnctl.add_command(epic_start, "cfn-loop-epic")
cfnctl.add_command(sprints)
cfnctl.add_command(sprints, "cfn-loop-sprints")
cfnctl.add_command(web)
cfnctl.add_command(init)
cfnctl.add_command(completion)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    cfnctl.main(args=list(argv) if argv is not None else None, prog_name="cfnctl")


if __name__ == "__main__":
    main()
