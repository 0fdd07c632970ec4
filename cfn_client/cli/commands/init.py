"""``cfnctl init [DIR]``: write a ready cfn project — cfn.toml, team, Claude Code glue.

Everything it writes is inside DIR, and an existing file is kept unless ``--force``
(a CLAUDE.md is never replaced: cfn's section goes between markers in it). Templates
are package data (``cfn_client/cli/templates``), filled with plain string substitution;
cfnctl stays free of cfn_daemon, so the daemon's loader validates the result only in
tests and in ``cfnd`` itself.
"""

from __future__ import annotations

import json
import string
import sys
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import click

from cfn_client.cli.commands.init_toml import agent_types_toml, team_toml

TEMPLATES = ("coordination", "minimal", "team")
#: cfnctl as the generated files call it, against the project's own socket.
CFNCTL = "cfnctl --socket .cfn/cfnd.sock"
SLASH_COMMANDS = ("cfn-loop", "cfn-loop-sprints", "cfn-loop-epic")
OFFLINE_AGENTS = ("implementer", "validator", "owner")
BEGIN_MARK = "<!-- cfn:begin (written by `cfnctl init`; edit outside the markers) -->"
END_MARK = "<!-- cfn:end -->"

CLAUDE_SECTION = """\
## Coordinating agents with cfn

This project runs a cfn daemon (`cfnd --config cfn.toml`, socket `.cfn/cfnd.sock`).
For work that deserves implementers, independent validators and a product owner's
decision, use the slash commands `/cfn-loop "TASK"`, `/cfn-loop-sprints "GOAL"` and
`/cfn-loop-epic FILE|"GOAL"`, or the `cfn` MCP server's tools (`.mcp.json`).

- Always pass `--json` to cfnctl and read the last line for the outcome.
- Exit 5 means ESCALATED: ask the user, never approve or reject a run yourself.
- Agent types live in `cfn.toml` (`[agent_types.NAME]`); `cfnctl config validate
  cfn.toml` checks the file, `cfnctl loop list` shows runs.
"""


def _template(name: str) -> str:
    return resources.files("cfn_client.cli").joinpath("templates", name).read_text("utf-8")


def cfn_toml(
    template: str, offline: bool, agents_dir: str, team: dict[str, Any] | None = None
) -> str:
    """The project's cfnd config (valid for ``cfnd --config``)."""
    head = string.Template(_template("cfn.toml.tmpl")).substitute(template=template)
    return head + "\n" + agent_types_toml(template, offline, sys.executable, agents_dir, team)


def slash_command(name: str) -> str:
    """The Claude Code command ``/NAME`` (``$ARGUMENTS`` is Claude Code's, kept as is)."""
    common = string.Template(_template("claude/_common.md.tmpl")).safe_substitute(CFNCTL=CFNCTL)
    text = string.Template(_template(f"claude/{name}.md.tmpl"))
    return text.safe_substitute(CFNCTL=CFNCTL, COMMON=common.rstrip("\n"))


def mcp_json() -> str:
    """``.mcp.json``: Claude Code starts ``cfn-mcp`` against the project's socket."""
    doc = {
        "mcpServers": {
            "cfn": {"command": "cfn-mcp", "args": ["--socket", ".cfn/cfnd.sock"], "env": {}}
        }
    }
    return json.dumps(doc, indent=2) + "\n"


def read_team_config(path: Path) -> dict[str, Any]:
    """A team file (TOML or JSON) as a table; ``click.BadParameter`` naming what is wrong."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}") from None
    try:
        doc: Any = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise click.BadParameter(f"{path} is not valid {kind}: {exc}") from None
    if not isinstance(doc, dict):
        raise click.BadParameter(f"{path}: expected a table/object at the top, got {doc!r:.40}")
    return doc


def merge_claude_md(existing: str | None) -> str:
    """CLAUDE.md with cfn's section between the markers (replaced if present, else appended)."""
    section = f"{BEGIN_MARK}\n{CLAUDE_SECTION}{END_MARK}\n"
    if existing is None:
        return section
    start, end = existing.find(BEGIN_MARK), existing.find(END_MARK)
    if start != -1 and end > start:
        return existing[:start] + section + existing[end + len(END_MARK) :].lstrip("\n")
    # One blank line between the user's text and the section.
    sep = "\n" * max(0, 2 - (len(existing) - len(existing.rstrip("\n")))) if existing else ""
    return existing + sep + section


@dataclass
class Plan:
    """What init writes: relative path -> text, and the modes of scripts."""

    root: Path
    files: dict[str, str]
    executable: frozenset[str] = frozenset()


def plan(
    root: Path, template: str, offline: bool, team: dict[str, Any] | None
) -> Plan:  # fmt: skip
    """Every file of a new project under ``root`` (nothing is written here)."""
    files = {
        "cfn.toml": cfn_toml(template, offline, str(root.resolve() / ".cfn" / "agents"), team),
        "config/team.toml": team_toml(template, team),
        ".mcp.json": mcp_json(),
        # cfnd's socket, state and embedded Redis live in .cfn/: never committed.
        ".cfn/.gitignore": "# cfnd's socket, state and embedded Redis (cfnctl init)\n*\n",
    }
    for name in SLASH_COMMANDS:
        files[f".claude/commands/{name}.md"] = slash_command(name)
    scripts: set[str] = set()
    if offline:
        for agent in OFFLINE_AGENTS:
            rel = f".cfn/agents/{agent}.py"
            files[rel] = _template(f"agents/{agent}.py.tmpl")
            scripts.add(rel)
    claude_md = root / "CLAUDE.md"
    try:
        existing = claude_md.read_text("utf-8") if claude_md.exists() else None
    except UnicodeDecodeError:  # rewriting it would mangle the user's bytes
        raise click.ClickException(f"{claude_md} is not UTF-8 text; not touching it") from None
    files["CLAUDE.md"] = merge_claude_md(existing)
    return Plan(root, files, frozenset(scripts))


def write(p: Plan, force: bool) -> tuple[list[str], list[str]]:
    """Write ``p``; returns (written, kept). CLAUDE.md is merged, so always written."""
    written: list[str] = []
    kept: list[str] = []
    root = p.root.resolve()
    for rel, text in p.files.items():
        target = (root / rel).resolve()
        if root not in target.parents:  # a symlinked dir pointing out of DIR: refused
            raise click.ClickException(f"{rel} resolves outside {root}; not writing it")
        if target.exists() and rel != "CLAUDE.md" and not force:
            if target.read_text("utf-8", errors="replace") != text:
                kept.append(rel)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and target.read_text("utf-8", errors="replace") == text:
            continue
        target.write_text(text, "utf-8")
        if rel in p.executable:
            target.chmod(0o755)
        written.append(rel)
    return written, kept


@click.command("init")
@click.argument("directory", metavar="[DIR]", default=".", type=click.Path(path_type=Path))
@click.option(
    "--template", type=click.Choice(TEMPLATES), default="coordination", show_default=True,
    help="coordination: Claude Code implementers, validators (reviewers, pytest, ruff) and "
    "a product owner; minimal: one of each; team: coordination plus a team file's roles.",
)  # fmt: skip
@click.option(
    "--offline", is_flag=True,
    help="Agent types run bundled example agents (.cfn/agents/*.py, no LLM, no cost): "
    "for trying cfn and for tests. Switch to the Claude Code types by re-running "
    "without it (with --force).",
)  # fmt: skip
@click.option(
    "--redis-backend", is_flag=True,
    help="Accepted for the guide's sake: cfnd's embedded Redis is already the default.",
)  # fmt: skip
@click.option(
    "--team-config", type=click.Path(path_type=Path, exists=True, dir_okay=False),
    metavar="FILE", help="A team file (TOML or JSON: [team], [roles.NAME]) for config/team.toml.",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite files that exist (CLAUDE.md is merged).")
def init(
    directory: Path, template: str, offline: bool, redis_backend: bool,
    team_config: Path | None, force: bool,
) -> None:  # fmt: skip
    """Write a ready cfn project in DIR (default: here): cfn.toml, config/team.toml,
    Claude Code slash commands (/cfn-loop, /cfn-loop-sprints, /cfn-loop-epic),
    .mcp.json for cfn-mcp and a cfn section in CLAUDE.md. Nothing outside DIR is
    touched and no file is overwritten without --force.

    Then: `cd DIR && cfnd --config cfn.toml`."""
    del redis_backend  # the default already
    if directory.exists() and not directory.is_dir():
        raise click.BadParameter(f"{directory} exists and is not a directory", param_hint="DIR")
    team = read_team_config(team_config) if team_config else None
    directory.mkdir(parents=True, exist_ok=True)
    written, kept = write(plan(directory, template, offline, team), force)
    for rel in written:
        click.echo(f"wrote {directory / rel}")
    for rel in kept:
        click.echo(f"kept  {directory / rel} (exists; --force overwrites it)")
    if not written and not kept:
        click.echo(f"{directory}: up to date")
    click.echo(f"next: cd {directory} && cfnd --config cfn.toml")
