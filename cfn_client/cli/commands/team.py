"""``cfnctl team``: team roles that grant access roles and agent pools (docs/SECURITY.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import msgspec

from cfn_client.cli import render
from cfn_client.cli.commands.init import read_team_config
from cfn_client.cli.env import CliEnv, pass_env
from cfn_client.wire.schema.team import TeamInfo, TeamRole

GRANTS = ("viewer", "operator", "admin", "exec")


@click.group()
def team() -> None:
    """Team roles: what their members may do (access roles, `exec`, agent pools)."""


def _show(info: TeamInfo) -> str:
    rows = [
        [r.name, ",".join(r.grants) or "-", ",".join(r.agent_types or [r.name]), r.description]
        for r in info.roles
    ]
    lines = [render.table(["ROLE", "GRANTS", "AGENT POOL", "DESCRIPTION"], rows), ""]
    lines.append("MEMBERS" if info.members else "no members")
    lines += [f"  {user}: {', '.join(roles)}" for user, roles in sorted(info.members.items())]
    return "\n".join(lines)


@team.command("role-create")
@click.argument("name")
@click.argument("description")
@click.option(
    "--grants",
    multiple=True,
    type=click.Choice(GRANTS),
    help="An access role or `exec` its members get (repeatable).",
)
@click.option(
    "--agent-type",
    "agent_types",
    multiple=True,
    metavar="TYPE",
    help="An agent type its members may create and run (repeatable; default: NAME).",
)
@pass_env
def role_create(
    env: CliEnv, name: str, description: str, grants: tuple[str, ...], agent_types: tuple[str, ...]
) -> None:
    """Create the team role NAME (e.g. `frontend-dev "Frontend specialist" --grants operator`)."""
    info = env.call(
        lambda c: c.team_role_create(name, description, grants=grants, agent_types=agent_types)
    )
    env.emit(info, lambda: _show(info))


@team.command("assign")
@click.argument("user")
@click.argument("role")
@pass_env
def assign(env: CliEnv, user: str, role: str) -> None:
    """Give USER (a login name) the team role ROLE."""
    info = env.call(lambda c: c.team_assign(user, role))
    env.emit(info, lambda: _show(info))


@team.command("list")
@pass_env
def list_(env: CliEnv) -> None:
    """List the team roles and their members."""
    info = env.call(lambda c: c.team_list())
    env.emit(info, lambda: _show(info))


def team_from_file(doc: dict[str, Any]) -> tuple[list[TeamRole], dict[str, list[str]]]:
    """Roles and members of a team file (the format `cfnctl init` writes)."""
    roles = []
    for name, table in (doc.get("roles") or {}).items():
        if not isinstance(table, dict):
            raise click.BadParameter(f"[roles.{name}] must be a table")
        try:
            roles.append(
                msgspec.convert(
                    {
                        "name": name,
                        "description": table.get("description", ""),
                        "grants": table.get("grants", []),
                        "agent_types": table.get("agent_types", []),
                    },
                    TeamRole,
                )
            )
        except msgspec.ValidationError as exc:
            raise click.BadParameter(f"[roles.{name}]: {exc}") from None
    members: dict[str, list[str]] = {}
    for user, value in (doc.get("members") or {}).items():
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise click.BadParameter(f"[members] {user}: expected a role name or a list of them")
        members[user] = names
    return roles, members


@team.command("sync")
@click.option(
    "--file",
    "path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("config/team.toml"),
    show_default=True,
    help="The team file (TOML or JSON: [roles.NAME], [members]).",
)
@click.option("--dry-run", is_flag=True, help="Only show what would change.")
@pass_env
def sync(env: CliEnv, path: Path, dry_run: bool) -> None:
    """Make cfnd's team exactly the file's (idempotent); print the changes."""
    roles, members = team_from_file(read_team_config(path))
    result = env.call(lambda c: c.team_sync(roles, members, dry_run=dry_run))

    def human() -> str:
        if not result.changes:
            return "team is in sync: no changes"
        verb = "applied" if result.applied else "would apply (dry run)"
        return "\n".join([*result.changes, f"{len(result.changes)} change(s) {verb}"])

    env.emit(result, human)
