"""``cfnctl logs export``: swarm events and audit entries to CSV or JSON lines (guide §4)."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

import click

from cfn_client.cli import completion as complete
from cfn_client.cli.env import CliEnv, Since, pass_env
from cfn_client.wire.schema.logs import LOG_COLUMNS, LogEntry, LogSource


@click.group()
def logs() -> None:
    """Export cfn's logs: every swarm's events and the audit trail."""


@logs.command("export")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True,
    help="CSV (a header row, RFC 4180 quoting) or JSON lines (one object per line).",
)  # fmt: skip
@click.option(
    "--since", type=Since(), metavar="WHEN", help="From then: 10m, 2h, 1d ago, epoch ms or ISO."
)
@click.option("--until", type=Since(), metavar="WHEN", help="Up to then (same forms as --since).")
@click.option(
    "--swarm",
    "swarm_id",
    metavar="ID",
    shell_complete=complete.swarm_ids,
    help="One swarm's events (and the audit entries naming it).",
)
@click.option(
    "--source", "sources", type=click.Choice(["event", "audit"]), multiple=True,
    help="Only these sources (repeatable) [default: both].",
)  # fmt: skip
@click.option(
    "--output", "-o", required=True, metavar="FILE",
    help="Where to write; - for stdout.",
)  # fmt: skip
@pass_env
def export(
    env: CliEnv, fmt: str, since: int | None, until: int | None, swarm_id: str | None,
    sources: tuple[str, ...], output: str,
) -> None:  # fmt: skip
    """Write events and audit entries, oldest first per stream (audit first, then each
    swarm's events). Columns: time (UTC ISO), source, swarm, kind (event type or audited
    op), agent, task, user, outcome, detail (JSON)."""
    swarm = swarm_id or env.swarm
    chosen: list[LogSource] = ["event", "audit"]
    if sources:
        chosen = [s for s in chosen if s in sources]
    count = 0
    with env.client() as client, _open(output) as out:
        entries = client.logs_entries(swarm, since_ms=since, until_ms=until, sources=chosen)
        if fmt == "csv":
            writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
            writer.writerow(LOG_COLUMNS)
            for entry in entries:
                writer.writerow(row(entry))
                count += 1
        else:
            for entry in entries:
                out.write(json.dumps(document(entry), ensure_ascii=False, sort_keys=True) + "\n")
                count += 1
    if output != "-":
        if env.json:
            click.echo(json.dumps({"entries": count, "output": output, "format": fmt}))
        else:
            click.echo(f"exported {count} entries to {output}", err=True)


@contextlib.contextmanager
def _open(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    try:
        f = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise click.UsageError(f"cannot write {path}: {exc.strerror}") from None
    with f:
        yield f


def iso(ms: int) -> str:
    """Epoch ms as UTC ISO 8601 with milliseconds: ``2026-01-02T03:04:05.678Z``."""
    when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def row(e: LogEntry) -> list[str]:
    detail = json.dumps(e.detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return [iso(e.ts_ms), e.source, e.swarm, e.kind, e.agent, e.task, e.user, e.outcome, detail]


def document(e: LogEntry) -> dict[str, Any]:
    return {"time": iso(e.ts_ms), "id": e.id, "ts_ms": e.ts_ms, "source": e.source,
            "swarm": e.swarm, "kind": e.kind, "agent": e.agent, "task": e.task,
            "user": e.user, "outcome": e.outcome, "detail": e.detail}  # fmt: skip
