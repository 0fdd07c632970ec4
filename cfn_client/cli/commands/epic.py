"""``cfnctl epic``: phases of CFN runs in dependency order (Loop 1)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

from cfn_client.api.sync import Client
from cfn_client.cli import completion as complete
from cfn_client.cli.commands.loop import MAX_LOOP_LIMIT
from cfn_client.cli.env import CliEnv, FiniteRange, pass_env
from cfn_client.cli.progress import progress
from cfn_client.wire.schema.workflow import (
    EpicInfo,
    EpicSpec,
    PhaseSpec,
    parse_epic,
    sprints_spec,
)

EXIT_ESCALATED, EXIT_FAILED = 5, 6
EPIC_SUFFIXES = (".toml", ".json", ".yaml", ".yml")


def render_epic(info: EpicInfo) -> str:
    lines = [
        f"epic {info.id} ({info.name}): {info.status}",
        "order: " + " -> ".join(" | ".join(layer) for layer in info.order),
        "",
    ]
    width = max(len(p.name) for p in info.phases)
    for p in info.phases:
        after = f"  after {', '.join(p.depends_on)}" if p.depends_on else ""
        after += f"  checkpoint {p.checkpoint}" if p.checkpoint else ""
        lines.append(
            f"  {p.name:<{width}}  {p.status:<9}  {p.run or '-':<12}  {p.decision or '-':<8}{after}"
        )
        if p.reason:
            lines.append(f"  {'':<{width}}  cannot start: {p.reason}")
    return "\n".join(lines)


def epic_spec(source: str, phases: int | None) -> dict[str, Any]:
    """An epic file (TOML/JSON), or a GOAL split into N sequential phases."""
    path = Path(source)
    if phases is None and path.is_file():
        try:
            data = parse_epic(path.read_text(encoding="utf-8"), str(path))
        except Exception as exc:  # any parser's syntax error is a usage error here
            raise click.BadParameter(f"{path}: {exc}") from None
        try:
            msgspec.convert(data, EpicSpec)
        except msgspec.ValidationError as exc:
            raise click.BadParameter(
                f"{path}: {exc}; an epic has {', '.join(EpicSpec.__struct_fields__)} and "
                f"each phase {', '.join(PhaseSpec.__struct_fields__)}"
            ) from None
        return data
    if phases is None and (path.suffix.lower() in EPIC_SUFFIXES or os.sep in source):
        # Reads as a file name, not a goal: never start an epic whose goal is a typo.
        raise click.BadParameter(
            f"no epic file {source!r}; pass an existing TOML/JSON/YAML file, "
            'or a GOAL with --phases N (e.g. cfnctl epic start "add auth" --phases 3)'
        )
    n = phases or 3
    return {
        "name": source[:60],
        "description": source,
        "phases": [
            {
                "name": f"phase-{i}",
                "description": f"{source} (phase {i} of {n})",
                **({"depends_on": [f"phase-{i - 1}"]} if i > 1 else {}),
            }
            for i in range(1, n + 1)
        ],
    }


F = TypeVar("F", bound=Callable[..., Any])


def loop_limits(fn: F) -> F:
    """``--max-loop2`` / ``--max-loop3`` (the guide's spellings), for every phase's run."""
    limit = click.IntRange(min=1, max=MAX_LOOP_LIMIT)
    fn = click.option(
        "--max-loop3", type=limit, metavar="N",
        help="Each phase's run: at most N implementer iterations per round (1-100) "
        "[default: the phase's max_loop3, else cfnd's loop.max_loop3].",
    )(fn)  # fmt: skip
    return click.option(
        "--max-loop2", type=limit, metavar="N",
        help="Each phase's run: at most N validator rounds (1-100) "
        "[default: the phase's max_loop2, else cfnd's loop.max_loop2].",
    )(fn)  # fmt: skip


def with_loop_limits(
    spec: dict[str, Any], max_loop2: int | None, max_loop3: int | None
) -> dict[str, Any]:
    """``spec`` with the command line's limits on every phase (they win over the file's)."""
    given = {k: v for k, v in (("max_loop2", max_loop2), ("max_loop3", max_loop3)) if v is not None}
    if not given or not isinstance(spec.get("phases"), list):
        return spec  # (a malformed file is cfnd's to explain)
    phases = [{**p, **given} if isinstance(p, dict) else p for p in spec["phases"]]
    return {**spec, "phases": phases}


def epic_step(event_type: str, data: dict[str, Any]) -> str | None:
    """The progress line of an epic's event (None: not a step worth showing)."""
    if event_type == "epic.phase_started":
        return f"phase {data.get('phase')} started as run {data.get('run')}"
    if event_type == "epic.checkpoint":
        return f"checkpoint of {data.get('phase')}: {data.get('verdict')}"
    if event_type == "epic.blocked":
        return f"phase {data.get('phase')} cannot start: {data.get('reason')}"
    return None


@click.group()
def epic() -> None:
    """Run an epic: phases (each a CFN loop run) in dependency order; phases marked
    `parallel = true` run side by side. Exit status of a followed epic: 0 done,
    5 blocked on an escalated phase, 6 failed."""


def start_epic(env: CliEnv, spec: dict[str, Any], follow: bool) -> None:
    """Start ``spec``; with ``follow``, show its steps on a live line (stderr, a terminal)
    and exit by how it ends."""

    def go(c: Client) -> EpicInfo:
        info = c.epic_start(spec, swarm=env.swarm)
        if not follow:
            return info
        total = len(info.phases)
        # Events from the epic's creation on, so none can slip by before we listen.
        with (
            progress(f"epic {info.id}: starting", json_mode=env.json) as line,
            c.events_follow(swarm=info.swarm, since_ms=info.created_ms, types=["epic"]) as events,
        ):
            for ev in events:
                if ev.data.get("epic") != info.id:
                    continue
                step = epic_step(ev.type, ev.data)
                if step:
                    line.update(f"epic {info.id} ({total} phases): {step}")
                if ev.type in ("epic.finished", "epic.escalated"):
                    break
        return c.epic_status(info.id, swarm=info.swarm)

    info = env.call(go)
    env.emit(info, lambda: render_epic(info))
    if follow and info.status != "done":
        env.exit(EXIT_ESCALATED if info.status == "blocked" else EXIT_FAILED)


@epic.command("start")
@click.argument("source", metavar='FILE|"GOAL"')
@click.option("--phases", type=click.IntRange(1, 50), help="Split a GOAL into N phases.")
@click.option("--follow/--detach", default=True, help="Wait and show progress (default).")
@loop_limits
@pass_env
def start(
    env: CliEnv, source: str, phases: int | None, follow: bool, max_loop2: int | None,
    max_loop3: int | None,
) -> None:  # fmt: skip
    """Start an epic from FILE (TOML, JSON or YAML: name, phases[name, depends_on, parallel,
    implementers, validators, owner]) or from a GOAL with --phases N."""
    start_epic(env, with_loop_limits(epic_spec(source, phases), max_loop2, max_loop3), follow)


@epic.command("status")
@click.argument("epic_id", metavar="ID", shell_complete=complete.epic_ids)
@pass_env
def status(env: CliEnv, epic_id: str) -> None:
    """Show an epic's phases, their runs and statuses."""
    info = env.call(lambda c: c.epic_status(epic_id, swarm=env.swarm))
    env.emit(info, lambda: render_epic(info))


@epic.command("list")
@pass_env
def list_epics(env: CliEnv) -> None:
    """List the swarm's epics."""
    result = env.call(lambda c: c.epic_list(swarm=env.swarm))
    env.emit(result, lambda: "\n\n".join(render_epic(e) for e in result.epics) or "no epics")


@click.command("sprints")
@click.argument("goal", metavar='"GOAL"')
@click.option("--sprints", "count", type=click.IntRange(1, 50), default=3, show_default=True)
@click.option(
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False),
    help="An epic file whose phases are the sprints (overrides GOAL/--sprints).",
)
@click.option(
    "--check",
    "checks",
    multiple=True,
    metavar="CMD",
    help="Checkpoint command that must exit 0 after each sprint (repeatable).",
)
@click.option(
    "--min-confidence",
    type=FiniteRange(0, 1),
    help="Checkpoint: the sprint's final gate mean must reach this.",
)
@click.option("--follow/--detach", default=True)
@loop_limits
@pass_env
def sprints(
    env: CliEnv,
    goal: str,
    count: int,
    file: str | None,
    checks: tuple[str, ...],
    min_confidence: float | None,
    follow: bool,
    max_loop2: int | None,
    max_loop3: int | None,
) -> None:
    """Run GOAL as N sprints, one after the other, each a CFN run followed by its
    checkpoint (--check commands, --min-confidence); a failed checkpoint stops."""
    spec = (
        epic_spec(file, None) if file else sprints_spec(goal, count, list(checks), min_confidence)
    )
    start_epic(env, with_loop_limits(spec, max_loop2, max_loop3), follow)
