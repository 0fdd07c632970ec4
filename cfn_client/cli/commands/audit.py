"""``cfnctl audit search`` (who did what) and ``cfnctl redis info`` (Redis health)."""

from __future__ import annotations

import click

from cfn_client.cli import render
from cfn_client.cli.env import CliEnv, Since, pass_env
from cfn_client.cli.render.audit import audit_table, redis_info
from cfn_client.wire.schema.audit import AUDIT_LIMIT_DEFAULT, AUDIT_LIMIT_MAX


@click.group()
def audit() -> None:
    """The audit stream: every mutating op and every denied request (admin)."""


@audit.command("search")
@click.option(
    "--since",
    type=Since(),
    metavar="WHEN",
    help="From then: a duration ago (10m, 2h, 1d), epoch ms, or an ISO date-time.",
)
@click.option("--until", type=Since(), metavar="WHEN", help="Up to then (same forms as --since).")
@click.option("--user", metavar="USER", help="Only this user (a name or a numeric uid).")
@click.option("--op", metavar="OP", help="Only this op (swarm.destroy) or area (swarm).")
@click.option("--text", metavar="TEXT", help="Only entries containing TEXT (any case).")
@click.option(
    "--limit",
    type=click.IntRange(1, AUDIT_LIMIT_MAX),
    default=AUDIT_LIMIT_DEFAULT,
    show_default=True,
    help="At most this many entries.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as cfnctl --json does).")
@pass_env
def search(
    env: CliEnv,
    since: int | None,
    until: int | None,
    user: str | None,
    op: str | None,
    text: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Audit entries, newest first: time, user, uid, role, op, outcome, redacted args."""
    result = env.call(
        lambda c: c.audit_search(
            since_ms=since, until_ms=until, user=user, op=op, text=text, limit=limit
        )
    )
    click.echo(render.to_json(result) if env.json or as_json else audit_table(result))


@click.group()
def redis() -> None:
    """The Redis cfnd uses: health figures and alerts."""


@redis.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as cfnctl --json does).")
@pass_env
def info(env: CliEnv, as_json: bool) -> None:
    """Version, memory and eviction policy, clients, ops/s, evictions, hits/misses,
    persistence (AOF, RDB), what could not be checked, and the alerts in effect."""
    result = env.call(lambda c: c.redis_info())
    click.echo(render.to_json(result) if env.json or as_json else redis_info(result))
