"""``cfnctl loop``: start CFN loop runs, follow them, and decide escalated ones.

``cfnctl loop "TASK"`` starts a run (it is ``cfnctl loop start "TASK"``); the other
words after ``loop`` are subcommands. ``cfn-loop`` is a top-level alias of starting.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import Any

import click

from cfn_client.api.sync import Client
from cfn_client.cli import completion as complete
from cfn_client.cli import render
from cfn_client.cli.env import CliEnv, FiniteRange, pass_env
from cfn_client.cli.render import loop as render_loop
from cfn_client.wire.errors import EXIT_ERROR, EXIT_OK
from cfn_client.wire.schema.loop import MODES, SIZING, RunInfo

#: The run escalated: it waits for `cfnctl loop approve|reject RUN`.
EXIT_ESCALATED = 5
#: The run failed or was cancelled.
EXIT_RUN_FAILED = 6
#: Ctrl-C stopped following (the run itself goes on).
EXIT_INTERRUPTED = 130
# cfnd's hard cap on max_loop2 / max_loop3 (cfnd checks it too).
MAX_LOOP_LIMIT = 100
RUN_STATUSES = ("new", "loop3", "loop2", "loop4", "escalated", "done", "cancelled", "failed")

EXIT_CODES_HELP = """\b
Exit status of a followed run:
  0    done with PROCEED or DEFER (with --detach: started)
  5    ESCALATED: waiting for `cfnctl loop approve|reject RUN`
  6    failed or cancelled
  1    cfnd ended the stream before the run finished (or an error)
  130  Ctrl-C stopped following (the run goes on)
"""


def run_exit_code(run: RunInfo) -> int:
    """How a followed run ends the command: 0 done (PROCEED/DEFER), 5 escalated, 6 failed."""
    if run.status == "done" and run.decision in ("PROCEED", "DEFER"):
        return EXIT_OK
    if run.status == "escalated":
        return EXIT_ESCALATED
    if run.status in ("failed", "cancelled"):
        return EXIT_RUN_FAILED
    return EXIT_ERROR


def stdout_is_terminal() -> bool:
    """Whether a person watches stdout (then ``loop TASK`` follows by default)."""
    return sys.stdout.isatty()


class LoopGroup(click.Group):
    """``loop TASK ...`` runs ``loop start TASK ...``; ``loop COMMAND ...`` a subcommand.

    The first word decides: a subcommand name or a help option goes to the group,
    anything else (a task text, an option of ``start``, ``--``) to ``start``. A
    one-word task that looks like a misspelt subcommand (``loop lsit``) is refused
    rather than started; ``loop -- lsit`` starts it.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            first = args[0]
            if not first.startswith("-") and not any(ch.isspace() for ch in first):
                close = difflib.get_close_matches(first, list(self.commands), n=1, cutoff=0.75)
                if close:
                    raise click.UsageError(
                        f"no command {first!r}; did you mean `loop {close[0]}`? "
                        f"To start a run of the task {first!r}: cfnctl loop -- {first}",
                        ctx,
                    )
            args = ["start", *args]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return ['"TASK" [OPTIONS] | COMMAND [ARGS]...']


@click.group(cls=LoopGroup, epilog=EXIT_CODES_HELP)
def loop() -> None:
    """Run a task through the CFN loop: implementers (Loop 3) until their
    confidence passes the gate, validators' consensus (Loop 2), then the
    product owner's decision (Loop 4) — PROCEED, DEFER or ESCALATE to a human.

    \b
      cfnctl loop "TASK" [OPTIONS]   start a run (the same as `loop start`)
      cfnctl loop -- status          a task whose text is a command name
      cfnctl loop COMMAND ...        inspect, follow and decide runs
    """


def _team(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str] | None:
    # `--implementers coder,coder` and `--implementers coder --implementers coder` alike.
    if not values:
        return None
    items = [item.strip() for value in values for item in value.split(",")]
    if not all(items):
        raise click.BadParameter(f"empty agent type in {','.join(values)!r}", ctx, param)
    return items


def _loop_limit(**kw: Any) -> click.IntRange:
    return click.IntRange(min=1, max=MAX_LOOP_LIMIT, **kw)


@loop.command("start", epilog=EXIT_CODES_HELP)
@click.argument("task", metavar='"TASK"')
@click.option("--phase", metavar="NAME", help="The epic phase this run belongs to.")
@click.option(
    "--max-loop2", type=_loop_limit(), metavar="N",
    help="At most N validator rounds (1-100) [default: cfnd's loop.max_loop2].",
)  # fmt: skip
@click.option(
    "--max-loop3", type=_loop_limit(), metavar="N",
    help="At most N implementer iterations per round (1-100) [default: cfnd's loop.max_loop3].",
)  # fmt: skip
@click.option(
    "--implementers", multiple=True, callback=_team, metavar="TYPE,...",
    help="Loop 3 agent types [default: sized by --complexity].",
)  # fmt: skip
@click.option(
    "--validators", multiple=True, callback=_team, metavar="TYPE,...",
    help="Loop 2 agent types [default: sized by --complexity].",
)  # fmt: skip
@click.option(
    "--owner", metavar="TYPE",
    help="Loop 4 product-owner agent type [default: cfnd's built-in rule].",
)  # fmt: skip
@click.option(
    "--complexity", type=click.Choice(list(SIZING)), default=None,
    help="Size the team when no types are listed: simple 3 agents, medium 6 (default), "
    "complex 10, enterprise 15.",
)  # fmt: skip
@click.option(
    "--mode", type=click.Choice(list(MODES)), default=None,
    help="Preset gate / consensus / iterations / validators: mvp 0.65/0.85/5/2, "
    "standard 0.75/0.90/10/4, enterprise 0.85/0.95/15/5 (explicit options win).",
)  # fmt: skip
@click.option(
    "--gate-threshold",
    type=FiniteRange(0, 1),
    metavar="X",
    default=None,
    help="Loop 3 confidence gate [default: mode or cfnd's loop.gate_threshold].",
)
@click.option(
    "--consensus-threshold",
    type=FiniteRange(0, 1),
    metavar="X",
    default=None,
    help="Loop 2 consensus needed [default: mode or loop.consensus_threshold].",
)
@click.option(
    "--repo", metavar="PATH",
    help="Work on this git repository: each implementer in its own worktree and branch "
    "cfn/<run>/<agent>; your working tree and branch stay untouched [default: loop.repo].",
)  # fmt: skip
@click.option("--base", metavar="REF", help="Branch the work from REF [default: HEAD].")
@click.option(
    "--check", "checks", multiple=True, metavar="CMD",
    help="A command every candidate must pass, e.g. 'python -m pytest -q' (repeatable).",
)  # fmt: skip
@click.option(
    "--no-change-ok",
    is_flag=True,
    help="Research or analysis: an implementer may pass the gate without a diff.",
)
@click.option(
    "--compete",
    is_flag=True,
    help="Best of n: each implementer's branch is a candidate; the best passing wins.",
)
@click.option(
    "--budget-usd",
    type=FiniteRange(min=0, min_open=True),
    metavar="X",
    default=None,
    help="Launch no more agents once the run spent X dollars.",
)
@click.option("--follow", is_flag=True, help="Print the run's events until it ends.")
@click.option("--detach", is_flag=True, help="Print the run id and return at once.")
@pass_env
def start(
    env: CliEnv, task: str, phase: str | None, max_loop2: int | None, max_loop3: int | None,
    implementers: list[str] | None, validators: list[str] | None, owner: str | None,
    complexity: str | None, mode: str | None, gate_threshold: float | None,
    consensus_threshold: float | None, repo: str | None, base: str | None,
    checks: tuple[str, ...], no_change_ok: bool, compete: bool, budget_usd: float | None,
    follow: bool, detach: bool,
) -> None:  # fmt: skip
    """Start a CFN loop run of TASK on the current swarm.

    By default it follows the run when stdout is a terminal (--follow) and
    detaches otherwise (--detach), so `run=$(cfnctl loop "TASK")` captures the
    run id. Following prints one line per event (each implementer's confidence,
    the gate, each validator's vote, each round's score, the owner's decision),
    then a summary; with --json one JSON object per line: the run as started,
    each event, and the run as it ended. Ctrl-C stops following, not the run.
    """
    if follow and detach:
        raise click.UsageError("--follow and --detach exclude each other; pick one")
    following = follow or (not detach and stdout_is_terminal())

    def go(c: Client) -> RunInfo:
        run = c.loop_start(
            task, swarm=env.swarm, phase=phase, implementers=implementers,
            validators=validators, owner=owner, max_loop2=max_loop2, max_loop3=max_loop3,
            complexity=complexity, mode=mode, gate_threshold=gate_threshold,
            consensus_threshold=consensus_threshold, repo=_abs(repo), base=base, checks=checks,
            no_change_ok=no_change_ok, compete=compete, budget_usd=budget_usd,
        )  # fmt: skip
        if not following:
            return run
        click.echo(render.to_json(run) if env.json else render_loop.run_started(run))
        return _follow(env, c, run)

    if not following:
        run = env.call(go)
        env.emit(run, lambda: run.id)
        return
    env.exit(_followed(env, go))


def _abs(path: str | None) -> str | None:
    # cfnd has its own working directory: send the repository as an absolute path.
    return None if path is None else os.path.abspath(os.path.expanduser(path))


def _follow(env: CliEnv, c: Client, run: RunInfo) -> RunInfo:
    """Print ``run``'s events until cfnd ends the stream; return the run as it is then."""
    view = render_loop.FollowView(run.max_loop2, run.max_loop3)
    with c.loop_follow(run.id, run.swarm) as events:
        for event in events:
            click.echo(render.to_json(event) if env.json else view.line(event))
    return c.loop_status(run.id, run.swarm)


def _followed(env: CliEnv, fn: Any) -> int:
    """Run a follow (``fn``), print the summary and return the exit status."""
    try:
        run: RunInfo = env.call(fn)
    except KeyboardInterrupt:
        env.warn("stopped following; the run goes on (`cfnctl loop follow RUN` to watch again)")
        return EXIT_INTERRUPTED
    if env.json:
        click.echo(render.to_json(run))
    else:
        click.echo("\n" + render_loop.run_summary(run))
    code = run_exit_code(run)
    if code == EXIT_ERROR:
        env.warn(f"cfnd ended the stream while run {run.id} is {run.status}")
    return code


# The top-level alias `cfnctl cfn-loop "TASK"`: the same command under another name.
cfn_loop = click.Command(
    "cfn-loop",
    callback=start.callback,
    params=start.params,
    help=start.help,
    epilog=EXIT_CODES_HELP,
    short_help='Start a CFN loop run (the same as `loop "TASK"`).',
)


@loop.command("follow", epilog=EXIT_CODES_HELP)
@click.argument("run_id", metavar="RUN", shell_complete=complete.run_ids)
@pass_env
def follow_(env: CliEnv, run_id: str) -> None:
    """Print RUN's events until it ends or escalates, then a summary.

    With --json one JSON object per event, then the run as it ended.
    """

    def go(c: Client) -> RunInfo:
        run = c.loop_status(run_id, env.swarm)
        if not env.json:
            click.echo(render_loop.run_header(run))
        return _follow(env, c, run)

    env.exit(_followed(env, go))


@loop.command("status")
@click.argument("run_id", metavar="RUN", shell_complete=complete.run_ids)
@pass_env
def status(env: CliEnv, run_id: str) -> None:
    """Show RUN: state, round and iteration, pending agents, decision, feedback, and
    every consensus round. Exits 0 whatever the run's state."""
    result = env.call(lambda c: c.loop_status(run_id, env.swarm))
    env.emit(result, lambda: render_loop.run_info(result))


@loop.command("list")
@click.option("--status", type=click.Choice(RUN_STATUSES), help="Only runs in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@pass_env
def list_(env: CliEnv, status: str | None, limit: int) -> None:
    """List the swarm's runs."""
    result = env.call(lambda c: c.loop_list(env.swarm, status=status, limit=limit))
    env.emit(result, lambda: render_loop.runs_table(result.runs))


@loop.command("approve")
@click.argument("run_id", metavar="RUN", shell_complete=complete.run_ids)
@click.option("--reason", default="", help="Why (recorded in the run's history).")
@pass_env
def approve(env: CliEnv, run_id: str, reason: str) -> None:
    """Approve escalated RUN: it ends done, decision PROCEED."""
    result = env.call(lambda c: c.loop_approve(run_id, reason, swarm=env.swarm))
    env.emit(result, lambda: render_loop.run_change(result, "approved"))


@loop.command("reject")
@click.argument("run_id", metavar="RUN", shell_complete=complete.run_ids)
@click.option("--feedback", default="", metavar="TEXT", help="What the next round must fix.")
@pass_env
def reject(env: CliEnv, run_id: str, feedback: str) -> None:
    """Reject escalated RUN: one more round starts, with FEEDBACK for the implementers."""
    result = env.call(lambda c: c.loop_reject(run_id, feedback, swarm=env.swarm))
    env.emit(result, lambda: render_loop.run_change(result, "rejected"))


@loop.command("extend")
@click.argument("run_id", metavar="RUN", shell_complete=complete.run_ids)
@click.option(
    "--max-loop2", type=_loop_limit(), required=True, metavar="N",
    help="The new budget of validator rounds (above the current one, at most 100).",
)  # fmt: skip
@pass_env
def extend(env: CliEnv, run_id: str, max_loop2: int) -> None:
    """Allow RUN more validator rounds; an escalated run goes on with its feedback."""
    result = env.call(lambda c: c.loop_extend(run_id, max_loop2, swarm=env.swarm))
    env.emit(result, lambda: render_loop.run_change(result, f"extended to {max_loop2} rounds"))


@loop.command("cancel")
@click.argument("run_id", metavar="RUN", shell_complete=complete.run_ids)
@click.option("--reason", default="", help="Why (recorded in the run's history).")
@pass_env
def cancel(env: CliEnv, run_id: str, reason: str) -> None:
    """Cancel RUN (unless it already finished)."""
    result = env.call(lambda c: c.loop_cancel(run_id, reason, swarm=env.swarm))
    env.emit(result, lambda: render_loop.run_change(result, "cancelled"))


@loop.command("backlog")
@click.argument("run_id", metavar="RUN", shell_complete=complete.run_ids)
@pass_env
def backlog(env: CliEnv, run_id: str) -> None:
    """Print the backlog items a DEFER decision left on RUN, one per line."""
    result = env.call(lambda c: c.loop_backlog(run_id, swarm=env.swarm))
    if not env.json and not result.items:
        env.warn(f"run {result.run}: no backlog items")
        return
    env.emit(result, lambda: render_loop.backlog(result))


@loop.command("apply")
@click.argument("run_id", metavar="RUN", shell_complete=complete.run_ids)
@click.option(
    "--merge",
    "how",
    flag_value="merge",
    default=True,
    help="Merge the winning branch into your current branch (default).",
)
@click.option("--squash", "how", flag_value="squash", help="One squashed commit instead.")
@click.option("--patch", "patch_file", metavar="FILE", help="Write the change as a patch FILE.")
@click.option("--repo", metavar="PATH", help="The checkout to apply to [default: the run's].")
@pass_env
def apply_(env: CliEnv, run_id: str, how: str, patch_file: str | None, repo: str | None) -> None:
    """Bring RUN's result into your current branch; refuses a dirty working tree."""
    how = "patch" if patch_file else how
    result = env.call(
        lambda c: c.loop_apply(run_id, how, file=_abs(patch_file), repo=_abs(repo), swarm=env.swarm)
    )
    env.emit(result, lambda: render_loop.applied(result))


@loop.command("clean")
@click.argument("run_id", metavar="RUN", shell_complete=complete.run_ids)
@pass_env
def clean(env: CliEnv, run_id: str) -> None:
    """Remove a finished RUN's worktrees and cfn/RUN/* branches."""
    result = env.call(lambda c: c.loop_clean(run_id, swarm=env.swarm))
    env.emit(result, lambda: render_loop.cleaned(result))
