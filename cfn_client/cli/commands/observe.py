"""``cfnctl metrics``: agents' recent performance (guide §9)."""

from __future__ import annotations

import click

from cfn_client.cli import render
from cfn_client.cli.env import CliEnv, pass_env
from cfn_client.wire.schema.observe import MetricsResult


@click.command()
@click.option("--agent", metavar="ID", help="One agent, with its recent executions.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "prom"]), default="table",
    show_default=True, help="A table, JSON, or Prometheus text.",
)  # fmt: skip
@pass_env
def metrics(env: CliEnv, agent: str | None, fmt: str) -> None:
    """Show agents' last 1,000 executions: success rate, mean/min/max/p95 duration and a
    per-task-type breakdown (every swarm's agents unless --swarm or --agent)."""
    # Every swarm unless --swarm: the current swarm (context) narrows nothing here.
    result = env.call(lambda c: c.metrics_agents(env.swarm_flag, agent))
    if fmt == "json" or env.json:
        click.echo(render.to_json(result))
    elif fmt == "prom":
        click.echo(prom_text(result), nl=False)
    else:
        click.echo(table(result), nl=False)


def table(result: MetricsResult) -> str:
    head = ("SWARM", "AGENT", "RUNS", "SUCCESS", "MEAN_MS", "MIN_MS", "MAX_MS", "P95_MS", "TYPES")
    rows = []
    for a in result.agents:
        types = ",".join(f"{t}:{p.executions}" for t, p in a.by_type.items()) or "-"
        rows.append(
            (a.swarm, a.agent, str(a.executions), f"{a.success_rate:.0%}", f"{a.mean_ms:.1f}",
             f"{a.min_ms:.1f}", f"{a.max_ms:.1f}", f"{a.p95_ms:.1f}", types)
        )  # fmt: skip
    out = render.table(head, rows) + "\n"
    for a in result.agents:
        for e in a.recent:
            state = "ok" if e.ok else "failed"
            out += f"  {e.ts_ms} {e.task} {e.type} {e.duration_ms:.1f}ms {state}\n"
    return out


def prom_text(result: MetricsResult) -> str:
    lines = []
    fields = ("executions", "success_rate", "mean_ms", "min_ms", "max_ms", "p95_ms")
    for name in fields:
        lines.append(f"# TYPE cfn_agent_{name} gauge")
        for a in result.agents:
            value = getattr(a, name)
            lines.append(f'cfn_agent_{name}{{swarm="{a.swarm}",agent="{a.agent}"}} {value}')
    return "\n".join(lines) + "\n"
