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


class RoleResolver:
    """Maps a peer's uid/gid to a role: root and cfnd's own user are always admin."""

    def __init__(self, auth: AuthConfig) -> None:
        self.auth = auth
        self._cache: dict[tuple[int, int], tuple[str, Role]] = {}

    def resolve(self, uid: int, gid: int) -> tuple[str, Role]:
        key = (uid, gid)
        if key not in self._cache:
            self._cache[key] = self._compute(uid, gid)
        return self._cache[key]

    def _compute(self, uid: int, gid: int) -> tuple[str, Role]:
        try:
            user = pwd.getpwuid(uid).pw_name
            groups = {grp.getgrgid(g).gr_name for g in os.getgrouplist(user, gid)}
        except KeyError:
            user, groups = str(uid), set()
        if uid in (0, os.geteuid()) or user in self.auth.admin_users:
            return user, Role.admin
        if groups & set(self.auth.admin_groups):
            return user, Role.admin
        if user in self.auth.viewer_users:
            return user, Role.viewer
        return user, Role[self.auth.default_role]


def longest_idle(sessions: Iterable[S]) -> S | None:
    """The session idle the longest (nothing in flight, no partial frame), if any."""
    idle = [(since, i, x) for i, x in enumerate(sessions) if (since := x.idle_since) is not None]
    return min(idle)[2] if idle else None
