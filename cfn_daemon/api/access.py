"""Who may connect and how much: roles from peer credentials, and connection limits."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from cfn_client.wire.protocol import Role
from cfn_daemon.settings.schema import AuthConfig


class Idle(Protocol):
    """Anything that knows since when it has been idle (None: busy)."""

    @property
    def idle_since(self) -> float | None: ...


S = TypeVar("S", bound=Idle)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-uid cap and the idle and partial-frame timeouts (``[daemon]`` settings)."""

    per_uid: int = 256
    idle_timeout_s: float = 300.0
    frame_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Grant:
    """What one caller may do: its role, and whether it holds the ``exec`` right."""

    user: str
    role: Role
    exec: bool


class RoleResolver:
    """Maps a peer's uid/gid to a role and the ``exec`` right (docs/SECURITY.md).

    Root and cfnd's own user: admin with exec. Then, first match wins: ``[auth] users``
    by name, ``admin_users``/``viewer_users``, ``users`` by ``@group``, ``admin_groups``,
    the socket's group (``socket_group_role``), else ``default_role`` (``none``: refused).
    """

    def __init__(self, auth: AuthConfig, socket_gid: int | None = None) -> None:
        self.auth = auth
        self.socket_gid = socket_gid
        self._cache: dict[tuple[int, int], Grant] = {}

    def resolve(self, uid: int, gid: int) -> tuple[str, Role]:
        grant = self.grant(uid, gid)
        return grant.user, grant.role

    def grant(self, uid: int, gid: int) -> Grant:
        key = (uid, gid)
        if key not in self._cache:
            self._cache[key] = self._compute(uid, gid)
        return self._cache[key]

    def _compute(self, uid: int, gid: int) -> Grant:
        try:
            user = pwd.getpwuid(uid).pw_name
            gids = set(os.getgrouplist(user, gid))
        except KeyError:
            user, gids = str(uid), {gid}
        groups = set()
        for g in gids:
            try:
                groups.add(grp.getgrgid(g).gr_name)
            except KeyError:
                groups.add(str(g))
        if uid in (0, os.geteuid()):
            return Grant(user, Role.admin, exec=True)
        allowed = set(self.auth.exec)
        can_exec = user in allowed or any(f"@{g}" in allowed for g in groups)
        return Grant(user, self._role(user, groups, gids), exec=can_exec)

    def _role(self, user: str, groups: set[str], gids: set[int]) -> Role:
        auth = self.auth
        if user in auth.users:
            return Role[auth.users[user]]
        if user in auth.admin_users:
            return Role.admin
        if user in auth.viewer_users:
            return Role.viewer
        by_group = [Role[auth.users[f"@{g}"]] for g in groups if f"@{g}" in auth.users]
        if by_group:
            return max(by_group)
        if groups & set(auth.admin_groups):
            return Role.admin
        if self.socket_gid is not None and self.socket_gid in gids:
            return Role[auth.socket_group_role]
        return Role[auth.default_role]


def runs_as_task(pid: int) -> bool:
    """True when ``pid`` descends from a task (cfn-agent sets ``no_new_privs`` on every
    task child, inherited by all its descendants and never cleared), or when its status
    cannot be read (it is gone already: fail closed)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("NoNewPrivs:"):
                    return line.split(":", 1)[1].strip() != "0"
    except OSError:
        return True
    return False


def as_task(grant: Grant) -> Grant:
    """A task's caller: viewer at most, never ``exec``, whatever its uid."""
    return Grant(grant.user, min(grant.role, Role.viewer), exec=False)


def longest_idle(sessions: Iterable[S]) -> S | None:
    """The session idle the longest (nothing in flight, no partial frame), if any."""
    idle = [(since, i, x) for i, x in enumerate(sessions) if (since := x.idle_since) is not None]
    return min(idle)[2] if idle else None
