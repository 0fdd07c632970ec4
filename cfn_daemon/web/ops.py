"""The ``web.login`` op: a one-time login link of the web console (``cfnctl web``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cfn_client.wire.errors import Conflict, PermissionDenied
from cfn_client.wire.protocol import Role
from cfn_client.wire.schema.system import WebLoginArgs, WebLoginResult
from cfn_daemon.api.router import RequestContext, Router
from cfn_daemon.web.auth import Identity, SessionBook


@dataclass
class WebOps:
    """Answers ``web.login``; ``console`` returns the running console's base URL and
    session book, or None when ``[web] enabled`` is false."""

    console: Callable[[], tuple[str, SessionBook] | None]

    def register(self, router: Router) -> None:
        router.add("web.login", self.login)

    async def login(self, ctx: RequestContext, args: WebLoginArgs) -> WebLoginResult:
        running = self.console()
        if running is None:
            raise Conflict(
                "the web console is off; set `[web] enabled = true` in cfnd's config "
                "(or CFN_WEB__ENABLED=true) and restart cfnd",
                details={"key": "web.enabled"},
            )
        base_url, book = running
        role = Role[args.role] if args.role else ctx.peer.role
        if role > ctx.peer.role:
            raise PermissionDenied(
                f"you ({ctx.peer.user}) have role {ctx.peer.role.name}; "
                f"a console login cannot have more ({role.name})",
                details={"needed": role.name, "have": ctx.peer.role.name},
            )
        who = Identity(user=ctx.peer.user, uid=ctx.peer.uid, gid=ctx.peer.gid, role=role)
        token = book.issue_token(who)
        return WebLoginResult(
            url=f"{base_url}/login?token={token}", role=role.name, expires_in_s=book.token_ttl_s
        )
