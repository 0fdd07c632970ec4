"""Schemas of the team ops (docs/SECURITY.md, "Teams"): team roles grant access roles
and agent pools (the agent types a member may create and run)."""

from __future__ import annotations

from typing import Literal

import msgspec

from cfn_client.wire.protocol import Args, Result

Grant = Literal["viewer", "operator", "admin", "exec"]


class TeamRole(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One team role: what its members may do. ``agent_types`` empty: the agent type
    of the role's own name (as ``cfnctl init --template team`` configures it)."""

    name: str
    description: str = ""
    grants: list[Grant] = []
    agent_types: list[str] = []


class TeamRoleCreateArgs(Args, kw_only=True):
    name: str
    description: str
    grants: list[Grant] = []
    agent_types: list[str] = []


class TeamAssignArgs(Args, kw_only=True):
    user: str
    role: str


class TeamListArgs(Args):
    pass


class TeamInfo(Result, kw_only=True):
    roles: list[TeamRole] = []
    members: dict[str, list[str]] = {}  # user -> team role names


class TeamSyncArgs(Args, kw_only=True):
    """The whole team (from config/team.toml): roles and members replace cfnd's."""

    roles: list[TeamRole] = []
    members: dict[str, list[str]] = {}
    dry_run: bool = False


class TeamSyncResult(Result, kw_only=True):
    changes: list[str] = []  # "+ role coder", "~ role coder: grants ...", "- member bob"
    applied: bool = False
