"""Teams: what a member's team roles grant, and the diff a ``team sync`` applies (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cfn_client.wire.protocol import Role
from cfn_client.wire.schema.team import TeamRole

SEP = "\n"  # between user and role in a team_members field


@dataclass(frozen=True, slots=True)
class TeamGrant:
    """A member's access role (None: no team role grants one), exec right and agent
    pool (the agent types it may create and run; None: not restricted)."""

    role: Role | None
    exec: bool
    pools: frozenset[str] | None


NO_GRANT = TeamGrant(None, False, None)


def member_field(user: str, role: str) -> str:
    return f"{user}{SEP}{role}"


def members_from_fields(fields: Mapping[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for field in sorted(fields):
        user, sep, role = field.partition(SEP)
        if sep:
            out.setdefault(user, []).append(role)
    return out


def grant_of(roles: Mapping[str, TeamRole], member_roles: list[str]) -> TeamGrant:
    """The union of what ``member_roles`` grant (unknown role names grant nothing)."""
    known = [roles[r] for r in member_roles if r in roles]
    if not known:
        return NO_GRANT
    access = [Role[g] for r in known for g in r.grants if g != "exec"]
    pools = frozenset(t for r in known for t in (r.agent_types or [r.name]))
    return TeamGrant(
        role=max(access) if access else None,
        exec=any("exec" in r.grants for r in known),
        pools=pools,
    )


def sync_changes(
    have_roles: Mapping[str, TeamRole],
    have_members: Mapping[str, list[str]],
    want_roles: Mapping[str, TeamRole],
    want_members: Mapping[str, list[str]],
) -> list[str]:
    """What replacing the team by the wanted one changes, one line each (sorted)."""
    out = []
    for name in sorted({*have_roles, *want_roles}):
        if name not in want_roles:
            out.append(f"- role {name}")
        elif name not in have_roles:
            out.append(f"+ role {name}")
        elif have_roles[name] != want_roles[name]:
            out.append(f"~ role {name}")
    have = {(u, r) for u, rs in have_members.items() for r in rs}
    want = {(u, r) for u, rs in want_members.items() for r in rs}
    out += [f"- member {u} {r}" for u, r in sorted(have - want)]
    out += [f"+ member {u} {r}" for u, r in sorted(want - have)]
    return out
