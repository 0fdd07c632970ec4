"""``cfnctl``: the command line of cfnd. Imports only click, msgspec and cfn_client, and of
those only what the command run needs (``COMMANDS`` are imported when used)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cfn_client import __version__
from cfn_client.cli.env import CliEnv, FiniteRange, report_error
from cfn_client.cli.hoist import hoist_output_flags
from cfn_client.cli.lazy import LazyCommand, LazyGroup
from cfn_client.cli.render.common import cli_error_document, to_json
from cfn_client.conn.base import DEFAULT_TIMEOUT_S
from cfn_client.wire.errors import CfnError
from cfn_client.wire.paths import default_socket_path

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

_C = "cfn_client.cli.commands."
_SPRINTS = (
    "Run GOAL as N sprints, one after the other, each a CFN run followed by its "
    "checkpoint (--check commands, --min-confidence); a failed checkpoint stops."
)

#: Every subcommand of the root: where it lives (imported when it runs, or for its own
#: help) and the start of its help, which the root's ``--help`` lists. Change a
#: command's help and this line with it (tests/test_cli_lazy.py fails until both agree).
COMMANDS: dict[str, LazyCommand] = {
    "status": LazyCommand(
        _C + "system:status", "Show the daemon, its Redis store and swarm counts."
    ),
    "ping": LazyCommand(
        _C + "system:ping", "Measure the round trip to cfnd (connection setup excluded)."
    ),
    "doctor": LazyCommand(
        _C + "system:doctor",
        "Check the socket, the connection, then the daemon's own checks (Redis etc.).",
    ),
    "test": LazyCommand(_C + "system:test_group", "Connectivity tests."),
    "config": LazyCommand(_C + "config:config", "Show, change and validate cfnd's configuration."),
    "swarm": LazyCommand(_C + "swarm:swarm", "Create, inspect, scale and remove swarms."),
    "agent": LazyCommand(
        _C + "agent:agent",
        "Create, inspect, stop, restart and message the current swarm's agents.",
    ),
    "team": LazyCommand(
        _C + "team:team",
        "Team roles: what their members may do (access roles, `exec`, agent pools).",
    ),
    "run": LazyCommand(
        _C + "task:run",
        "Queue TASK (or the text of --file) on the current swarm and print its id.",
    ),
    "task": LazyCommand(
        _C + "task:task",
        "List, inspect, cancel, wait for, retry and clean up tasks (queue them with `run`).",
    ),
    "dlq": LazyCommand(_C + "task:dlq", "The dead-letter queue: tasks that ran out of attempts."),
    "events": LazyCommand(_C + "events:events", "Show the current swarm's events, oldest first."),
    "monitor": LazyCommand(
        _C + "monitor:monitor",
        "Watch every swarm live (only one, with --swarm or $CFN_SWARM): queues, tasks, "
        "throughput and agents, redrawn every --interval. Quit with q or Ctrl-C.",
    ),
    "metrics": LazyCommand(
        _C + "observe:metrics",
        "Show agents' last 1,000 executions: success rate, mean/min/max/p95 duration and a "
        "per-task-type breakdown (every swarm's agents unless --swarm or --agent).",
    ),
    "debug": LazyCommand(
        _C + "debug:debug",
        "Show AGENT's record, heartbeat, pending work, last events, log tail and restarts.",
    ),
    "logs": LazyCommand(
        _C + "logs:logs", "Export cfn's logs: every swarm's events and the audit trail."
    ),
    "snapshot": LazyCommand(
        _C + "snapshot:snapshot", "Export cfn's records to a file, or import them back (admin)."
    ),
    "audit": LazyCommand(
        _C + "audit:audit",
        "The audit stream: every mutating op and every denied request (admin).",
    ),
    "redis": LazyCommand(_C + "audit:redis", "The Redis cfnd uses: health figures and alerts."),
    "loop": LazyCommand(
        _C + "loop:loop",
        "Run a task through the CFN loop: implementers (Loop 3) until their confidence "
        "passes the gate, validators' consensus (Loop 2), then the product owner's "
        "decision (Loop 4) — PROCEED, DEFER or ESCALATE to a human.",
    ),
    "cfn-loop": LazyCommand(
        _C + "loop:cfn_loop", 'Start a CFN loop run (the same as `loop "TASK"`).', short=True
    ),
    "epic": LazyCommand(
        _C + "epic:epic",
        "Run an epic: phases (each a CFN loop run) in dependency order; phases marked "
        "`parallel = true` run side by side. Exit status of a followed epic: 0 done, "
        "5 blocked on an escalated phase, 6 failed.",
    ),
    "cfn-loop-epic": LazyCommand(
        _C + "epic:start",
        "Start an epic from FILE (TOML, JSON or YAML: name, phases[name, depends_on, "
        "parallel, implementers, validators, owner]) or from a GOAL with --phases N.",
    ),
    "sprints": LazyCommand(_C + "epic:sprints", _SPRINTS),
    "cfn-loop-sprints": LazyCommand(_C + "epic:sprints", _SPRINTS),
    "web": LazyCommand(
        _C + "web:web",
        "Print a login URL of the web console (needs `[web] enabled = true` in cfnd).",
    ),
    "init": LazyCommand(
        _C + "init:init",
        "Write a ready cfn project in DIR (default: here): cfn.toml, config/team.toml, "
        "Claude Code slash commands (/cfn-loop, /cfn-loop-sprints, /cfn-loop-epic), "
        ".mcp.json for cfn-mcp and a cfn section in CLAUDE.md. Nothing outside DIR is "
        "touched and no file is overwritten without --force.",
    ),
    "completion": LazyCommand(
        "cfn_client.cli.completion:completion",
        "Print the completion script of SHELL: commands, options, and swarm, agent, run, "
        "task and epic ids asked of cfnd as you type (nothing when it is down).",
    ),
}

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


class CfnGroup(LazyGroup):
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
            doc = cli_error_document(code, exc.format_message(), exc.exit_code)
            click.echo(to_json(doc))
            ctx.exit(exc.exit_code)


def _complete_swarm(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    from cfn_client.cli.completion import swarm_ids  # on <Tab> only

    return swarm_ids(ctx, param, incomplete)


@click.group(
    cls=CfnGroup,
    lazy=COMMANDS,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"]},
)
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
    shell_complete=_complete_swarm,
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


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    cfnctl.main(args=list(argv) if argv is not None else None, prog_name="cfnctl")


if __name__ == "__main__":
    main()
