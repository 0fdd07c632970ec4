"""``cfnctl events``: a swarm's event history, or its live stream with --follow."""

from __future__ import annotations

import click

from cfn_client.api.sync import Client
from cfn_client.cli import render
from cfn_client.cli.env import CliEnv, Since, pass_env
from cfn_client.wire.errors import EXIT_OK


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option(
    "--since", type=Since(), metavar="DURATION_OR_MS",
    help="Only events since then: a duration ago (10m, 1h30m), epoch ms, or an ISO date-time.",
)  # fmt: skip
@click.option(
    "--type", "types", multiple=True, metavar="T",
    help="Only this type or family, e.g. task.failed or task (repeatable).",
)  # fmt: skip
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True,
    help="At most this many past events (without --follow).",
)  # fmt: skip
@pass_env
def events(
    env: CliEnv, follow: bool, since: int | None, types: tuple[str, ...], limit: int
) -> None:
    """Show the current swarm's events, oldest first.

    With --follow, print new events as they happen (and, with --since, the
    earlier ones first) until Ctrl-C or until cfnd ends the stream; --json then
    prints one JSON object per line.
    """
    if not follow:
        result = env.call(
            lambda c: c.events_list(env.swarm, since_ms=since, types=types, limit=limit)
        )
        env.emit(result, lambda: render.events_table(result.events))
        return

    def stream(client: Client) -> None:
        with client.events_follow(env.swarm, since_ms=since, types=types, limit=limit) as follow:
            for event in follow:
                click.echo(render.to_json(event) if env.json else render.event_line(event))

    try:
        env.call(stream)
    except KeyboardInterrupt:
        env.exit(EXIT_OK)  # Ctrl-C is how a follow is meant to end
    # (A closed pipe, as in `cfnctl events -f | head`, is click's: it exits quietly.)
    if not env.json:
        env.warn("cfnd ended the event stream")
