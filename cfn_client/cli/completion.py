"""Shell completion: the ``cfnctl completion`` command and the id completers.

Click does the shell side (``_CFNCTL_COMPLETE=bash_source cfnctl`` prints the script;
the script calls cfnctl back with ``COMP_WORDS``/``COMP_CWORD``). The completers here
ask cfnd for the ids a word can be — swarms, agents, runs, tasks, epics — with a
short timeout, and give nothing at all when cfnd is down, slow or refuses: a shell
waiting on <Tab> or printing a traceback mid-line is worse than no suggestion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import CompletionItem, get_completion_class

from cfn_client.wire.paths import default_socket_path

if TYPE_CHECKING:
    from cfn_client.api.sync import Client

#: How long a <Tab> may wait for cfnd, connect and reply together.
COMPLETION_TIMEOUT_S = 0.5
#: The most ids offered for one word (a swarm with thousands of tasks stays usable).
MAX_ITEMS = 200
SHELLS = ("bash", "zsh", "fish")
#: The environment variable click's completion scripts set (derived from the prog name).
COMPLETE_VAR = "_CFNCTL_COMPLETE"

Candidates = Iterable[tuple[str, str]]
Completer = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


def _root_params(ctx: click.Context) -> dict[str, Any]:
    # While completing, click parses the line without running callbacks: ctx.obj is unset,
    # but the root context's params hold --socket and --swarm (or $CFN_SWARM) as typed.
    return ctx.find_root().params


def _socket(ctx: click.Context) -> Path:
    socket = _root_params(ctx).get("socket_path")
    return Path(socket) if socket else default_socket_path()


def _swarm(ctx: click.Context) -> str | None:
    swarm = _root_params(ctx).get("swarm_id")
    return str(swarm) if swarm else None


def ask(ctx: click.Context, fetch: Callable[[Client, str | None], Candidates]) -> Candidates:
    """``fetch(client, swarm)`` against cfnd with a short timeout; nothing if that fails."""
    from cfn_client.api.sync import Client  # on <Tab> only: `cfnctl --version` needs none

    try:
        with Client(_socket(ctx), timeout_s=COMPLETION_TIMEOUT_S) as client:
            return list(fetch(client, _swarm(ctx)))
    except Exception:  # any failure (down, slow, denied, no swarm) means no suggestions
        return []


def completer(fetch: Callable[[Client, str | None], Candidates]) -> Completer:
    """A click ``shell_complete`` callback offering ``fetch``'s (id, help) pairs that
    start with the word typed so far."""

    def complete(
        ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        items = [
            CompletionItem(value, help=help_text or None)
            for value, help_text in ask(ctx, fetch)
            if value.startswith(incomplete)
        ]
        return items[:MAX_ITEMS]

    return complete


def _one_line(text: str, width: int = 40) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _swarms(c: Client, swarm: str | None) -> Candidates:
    del swarm  # every swarm, whichever is current
    for s in c.swarm_list().swarms:
        yield s.id, f"{s.topology}, {s.agents}/{s.max_agents} agents, {s.status}"
        if s.name and s.name != s.id:
            yield s.name, f"name of {s.id}"


def _agents(c: Client, swarm: str | None) -> Candidates:
    return ((a.id, f"{a.type} {a.role}, {a.status}") for a in c.agent_list(swarm).agents)


def _runs(c: Client, swarm: str | None) -> Candidates:
    runs = c.loop_list(swarm, limit=MAX_ITEMS).runs
    return ((r.id, f"{r.status}: {_one_line(r.task)}") for r in runs)


def _tasks(c: Client, swarm: str | None) -> Candidates:
    tasks = c.task_list(swarm, limit=MAX_ITEMS).tasks
    return ((t.id, f"{t.status}: {_one_line(t.text)}") for t in tasks)


def _epics(c: Client, swarm: str | None) -> Candidates:
    return ((e.id, f"{e.status}: {_one_line(e.name)}") for e in c.epic_list(swarm).epics)


swarm_ids = completer(_swarms)
agent_ids = completer(_agents)
run_ids = completer(_runs)
task_ids = completer(_tasks)
epic_ids = completer(_epics)


def script(cli: click.Command, shell: str, prog_name: str = "cfnctl") -> str:
    """The completion script click generates for ``shell``."""
    cls = get_completion_class(shell)
    if cls is None:  # only reachable with a shell click dropped; the Choice below guards it
        raise click.UsageError(f"no completion for {shell!r}; expected one of {', '.join(SHELLS)}")
    return cls(cli, {}, prog_name, COMPLETE_VAR).source()


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS), metavar="bash|zsh|fish")
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script of SHELL: commands, options, and swarm, agent,
    run, task and epic ids asked of cfnd as you type (nothing when it is down).

    \b
      bash:  source <(cfnctl completion bash)          (in ~/.bashrc)
      zsh:   source <(cfnctl completion zsh)           (in ~/.zshrc, after compinit)
      fish:  cfnctl completion fish > ~/.config/fish/completions/cfnctl.fish
    """
    click.echo(script(ctx.find_root().command, shell), nl=False)


def no_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """For an id that must be new (nothing existing to offer)."""
    return []
