"""``cfnctl snapshot export FILE`` / ``snapshot import FILE``: a versioned JSON document
of swarms, agents, tasks, runs, epics and config (docs/OPERATIONS.md, Backup and restore)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cfn_client.cli import completion as complete
from cfn_client.cli import render
from cfn_client.cli.env import CliEnv, pass_env
from cfn_client.wire.schema.snapshot import SnapshotImportResult


@click.group()
def snapshot() -> None:
    """Export cfn's records to a file, or import them back (admin)."""


@snapshot.command("export")
@click.argument("file", metavar="FILE")
@click.option(
    "--swarm", "swarm_id", metavar="ID", shell_complete=complete.swarm_ids,
    help="Only this swarm [default: every swarm].",
)  # fmt: skip
@pass_env
def export(env: CliEnv, file: str, swarm_id: str | None) -> None:
    """Write the snapshot document to FILE (- for stdout)."""
    data = env.call(lambda c: c.snapshot_export(swarm_id))
    if file == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    path = Path(file)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)  # a complete file or none
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise click.UsageError(f"cannot write {file}: {exc.strerror}") from None
    if env.json:
        click.echo(render.to_json({"output": file, "bytes": len(data)}))
    else:
        click.echo(f"snapshot written to {file} ({len(data)} bytes)", err=True)


@snapshot.command("import")
@click.argument("file", metavar="FILE")
@click.option(
    "--swarm",
    "swarm_id",
    metavar="NEW_ID",
    shell_complete=complete.no_ids,
    help="Import the file's one swarm as NEW_ID.",
)
@click.option(
    "--config", "with_config", is_flag=True, help="Apply its runtime config overrides too."
)
@pass_env
def import_(env: CliEnv, file: str, swarm_id: str | None, with_config: bool) -> None:
    """Import a snapshot: each swarm whole or not at all, never over an existing one.
    Agents come back as records only (stopped); in-flight tasks are queued again."""
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise click.UsageError(f"cannot read {file}: {exc.strerror}") from None
    result = env.call(lambda c: c.snapshot_import(data, swarm=swarm_id, config=with_config))
    env.emit(result, lambda: text(result))


def text(r: SnapshotImportResult) -> str:
    lines = [
        f"imported swarm{'s' if len(r.swarms) != 1 else ''} {', '.join(r.swarms) or '-'}: "
        f"{r.agents} agents, {r.tasks} tasks, {r.runs} runs, {r.epics} epics"
    ]
    if r.requeued:
        lines.append(f"queued again (in flight when exported): {', '.join(r.requeued)}")
    if r.config:
        lines.append(f"config applied: {', '.join(r.config)}")
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)
