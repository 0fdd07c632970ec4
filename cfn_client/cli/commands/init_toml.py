"""The TOML that ``cfnctl init`` writes: agent types per template, the team file.

A tiny TOML writer (strings, numbers, booleans, lists and tables) suffices here and
keeps cfnctl free of third-party TOML writers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

# name -> (kind, role, extra keys). "check" types vote by exit status.
AgentSpec = tuple[str, str, dict[str, Any]]

CLAUDE_IMPL: dict[str, Any] = {"model": "sonnet", "max_turns": 30}
CLAUDE_VAL: dict[str, Any] = {"model": "sonnet", "max_turns": 15}

COORDINATION: dict[str, AgentSpec] = {
    "coder": ("claude", "implementer", CLAUDE_IMPL),
    "reviewer": ("claude", "validator", CLAUDE_VAL),
    "security-specialist": ("claude", "validator", CLAUDE_VAL),
    "architect": ("claude", "validator", CLAUDE_VAL),
    "tester": ("check", "validator", {"exec": ["python", "-m", "pytest", "-q"]}),
    "lint": ("check", "validator", {"exec": ["ruff", "check", "."]}),
    "product-owner": ("claude", "owner", CLAUDE_VAL),
}
MINIMAL = ("coder", "reviewer", "security-specialist", "tester", "product-owner")
# Offline stand-ins: the bundled example agents, by role.
OFFLINE_SCRIPT = {"implementer": "implementer.py", "validator": "validator.py", "owner": "owner.py"}
ROLES = ("implementer", "validator", "owner")


def value(v: Any, where: str) -> str:
    """One TOML value; ``click.BadParameter`` for what TOML tables here cannot hold."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(v, list):
        return "[" + ", ".join(value(x, where) for x in v) + "]"
    raise click.BadParameter(f"{where}: cannot write a {type(v).__name__} value to TOML")


def table(doc: Mapping[str, Any], prefix: str = "") -> str:
    """``doc`` as TOML: its plain keys, then each sub-table under ``[prefix.key]``."""
    out: list[str] = []
    subs: list[tuple[str, Mapping[str, Any]]] = []
    for key, v in doc.items():
        name = key if key.replace("-", "").replace("_", "").isalnum() else json.dumps(key)
        if isinstance(v, Mapping):
            subs.append((f"{prefix}.{name}" if prefix else name, v))
        else:
            out.append(f"{name} = {value(v, f'{prefix}.{key}' if prefix else key)}")
    text = "\n".join(out) + ("\n" if out else "")
    for path, sub in subs:
        text += f"\n[{path}]\n" + table(sub, path)
    return text


def agent_types(
    template: str, offline: bool, python: str, agents_dir: str, team: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """``[agent_types]`` of a template; ``offline`` swaps every executor for an example agent."""
    names = MINIMAL if template == "minimal" else tuple(COORDINATION)
    specs = {n: COORDINATION[n] for n in names}
    if template == "team" and team:
        for name, role_doc in dict(team.get("roles", {})).items():
            if isinstance(role_doc, Mapping):
                specs.setdefault(name, _role_spec(name, role_doc))
    types: dict[str, dict[str, Any]] = {}
    for name, (kind, role, extra) in specs.items():
        if offline:
            script = f"{agents_dir}/{OFFLINE_SCRIPT[role]}"
            types[name] = {"kind": "command", "exec": [python, script], "role": role}
        else:
            types[name] = {"kind": kind, "role": role, **extra}
    return types


def _role_spec(name: str, doc: Mapping[str, Any]) -> AgentSpec:
    role = str(doc.get("role", "implementer"))
    if role not in ROLES:
        raise click.BadParameter(f"team role {name!r}: role {role!r} is not one of {ROLES}")
    extra: dict[str, Any] = dict(CLAUDE_IMPL if role == "implementer" else CLAUDE_VAL)
    if doc.get("model"):
        extra["model"] = str(doc["model"])
    if doc.get("description"):
        extra["args"] = ["--append-system-prompt", f"You are the {name}: {doc['description']}"]
    return ("claude", role, extra)


def agent_types_toml(
    template: str, offline: bool, python: str, agents_dir: str,
    team: Mapping[str, Any] | None = None,
) -> str:  # fmt: skip
    """The ``[agent_types.*]`` tables as TOML text."""
    return table({"agent_types": agent_types(template, offline, python, agents_dir, team)})


DEFAULT_TEAM: dict[str, Any] = {
    "team": {"name": "my-team"},
    "roles": {
        "coder": {"role": "implementer", "description": "Writes the code and its tests."},
        "reviewer": {"role": "validator", "description": "Reviews changes for correctness."},
        "product-owner": {"role": "owner", "description": "Decides PROCEED, DEFER or ESCALATE."},
    },
    "members": {},
}


def team_toml(template: str, team: Mapping[str, Any] | None) -> str:
    """``config/team.toml``: the team's roles (agent types of the same names) and members."""
    head = (
        f"# The team of this project (`cfnctl init --template {template}`).\n"
        "# [roles.NAME]: role = implementer | validator | owner, description, model;\n"
        '#   grants = ["operator"] (viewer, operator, admin, exec) and agent_types = [...]\n'
        "#   (the agent pool; default: the type NAME) for `cfnctl team sync`.\n"
        '# [members]: user = "ROLE" or ["ROLE", ...].\n'
        "# With --template team, each role is also an agent type in cfn.toml.\n\n"
    )
    return head + table(team if team is not None else DEFAULT_TEAM)
