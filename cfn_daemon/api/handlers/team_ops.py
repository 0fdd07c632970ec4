"""Team ops: role-create, assign, list, sync (docs/SECURITY.md, "Teams")."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from cfn_client.wire.errors import Conflict, InvalidArgs, NotFound
from cfn_client.wire.schema.team import (
    TeamAssignArgs,
    TeamInfo,
    TeamListArgs,
    TeamRole,
    TeamRoleCreateArgs,
    TeamSyncArgs,
    TeamSyncResult,
)
from cfn_daemon.api.router import RequestContext, Router
from cfn_daemon.core import teams
from cfn_daemon.store.keys import Keys

CACHE_S = 2.0  # a new assignment takes effect within this long


@dataclass
class TeamOps:
    redis: Any
    keys: Keys
    _cache: tuple[float, dict[str, TeamRole], dict[str, list[str]]] | None = field(
        default=None, repr=False
    )

    def register(self, router: Router) -> None:
        router.add("team.role_create", self.role_create)
        router.add("team.assign", self.assign)
        router.add("team.list", self.list_team)
        router.add("team.sync", self.sync)

    async def _read(self) -> tuple[dict[str, TeamRole], dict[str, list[str]]]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.team_roles)
            pipe.hgetall(self.keys.team_members)
            raw_roles, raw_members = await pipe.execute()
        roles = {}
        for name, data in raw_roles.items():
            try:
                roles[_s(name)] = msgspec.json.decode(data, type=TeamRole)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
        members = teams.members_from_fields({_s(k): _s(v) for k, v in raw_members.items()})
        self._cache = (time.monotonic(), roles, members)
        return roles, members

    async def grant_for(self, user: str) -> teams.TeamGrant:
        """What ``user``'s team roles grant (cached for ``CACHE_S``)."""
        if self._cache is None or time.monotonic() - self._cache[0] > CACHE_S:
            await self._read()
        assert self._cache is not None
        _, roles, members = self._cache
        return teams.grant_of(roles, members.get(user, []))

    async def _info(self) -> TeamInfo:
        roles, members = await self._read()
        return TeamInfo(roles=[roles[n] for n in sorted(roles)], members=members)

    async def role_create(self, ctx: RequestContext, args: TeamRoleCreateArgs) -> TeamInfo:
        _check_name(args.name)
        role = TeamRole(
            name=args.name,
            description=args.description,
            grants=list(args.grants),
            agent_types=list(args.agent_types),
        )
        if not await self.redis.hsetnx(self.keys.team_roles, args.name, msgspec.json.encode(role)):
            raise Conflict(f"team role {args.name} exists already (`team sync` changes it)")
        return await self._info()

    async def assign(self, ctx: RequestContext, args: TeamAssignArgs) -> TeamInfo:
        _check_name(args.user)
        if not await self.redis.hexists(self.keys.team_roles, args.role):
            raise NotFound(f"no team role {args.role} (create it with `team role-create`)")
        await self.redis.hset(self.keys.team_members, teams.member_field(args.user, args.role), "1")
        return await self._info()

    async def list_team(self, ctx: RequestContext, args: TeamListArgs) -> TeamInfo:
        return await self._info()

    async def sync(self, ctx: RequestContext, args: TeamSyncArgs) -> TeamSyncResult:
        want_roles = {r.name: r for r in args.roles}
        for name in want_roles:
            _check_name(name)
        for user, names in args.members.items():
            _check_name(user)
            unknown = [n for n in names if n not in want_roles]
            if unknown:
                raise InvalidArgs(f"member {user}: no team role {', '.join(unknown)}")
        have_roles, have_members = await self._read()
        changes = teams.sync_changes(have_roles, have_members, want_roles, args.members)
        if args.dry_run or not changes:
            return TeamSyncResult(changes=changes, applied=False)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.team_roles, self.keys.team_members)
            if want_roles:
                pipe.hset(
                    self.keys.team_roles,
                    mapping={n: msgspec.json.encode(r) for n, r in want_roles.items()},
                )
            fields = {teams.member_field(u, r): "1" for u, rs in args.members.items() for r in rs}
            if fields:
                pipe.hset(self.keys.team_members, mapping=fields)
            await pipe.execute()
        self._cache = None
        return TeamSyncResult(changes=changes, applied=True)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_name(name: str) -> None:
    if not name or len(name) > 200 or teams.SEP in name:
        raise InvalidArgs(f"invalid name {name!r}: 1-200 characters, no newline")
