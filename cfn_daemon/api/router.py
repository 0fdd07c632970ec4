"""Typed routing of ops to handlers, through a chain of middleware.

A handler is ``async def op(ctx: RequestContext, args: OpArgs) -> OpResult`` (a stream
handler is an async generator of events). ``Router.add`` checks the handler's
annotations against the op registry (``wire.ops``) when the daemon starts, so a handler
that takes or returns the wrong Struct fails at start-up, not on the first request.

Every request then runs through the middleware, outermost first: request logging,
refusal while draining, authorisation by role, ``store_unavailable`` for every op
that needs Redis while it is down or frozen, and finally argument decoding.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import msgspec
import structlog

from cfn_client.wire.errors import (
    CfnError,
    PermissionDenied,
    RateLimited,
    ShuttingDown,
    StoreDenied,
    StoreUnavailable,
)
from cfn_client.wire.ops import OpSpec, lookup_op
from cfn_client.wire.protocol import Args, Role, decode_args
from cfn_daemon.core.ratelimit import RateLimiter

log = structlog.get_logger("cfn.server")

A = TypeVar("A", bound=Args, contravariant=True)
R = TypeVar("R", covariant=True)

__all__ = ["Handler", "Middleware", "Peer", "RequestContext", "Router", "StreamHandler"]
__all__ += ["denied", "rate_limit", "require_exec", "require_pool", "team_grants"]


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end of a connection (from SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int
    user: str
    role: Role
    exec: bool = False  # may submit free text to types that run it as code
    rate_exempt: bool = False  # root / cfnd's own user (not a task): no rate limit
    task: bool = False  # descends from a task: viewer at most, whatever teams grant
    pools: frozenset[str] | None = None  # agent types it may create/run (None: any)


@dataclass(slots=True)
class RequestContext:
    """Passed to every handler: the caller, the request id and the op."""

    peer: Peer
    request_id: int | str | None
    op: str


class Handler(Protocol[A, R]):
    """``async def op(ctx, args: OpArgs) -> OpResult``."""

    def __call__(self, ctx: RequestContext, args: A, /) -> Awaitable[R]: ...


class StreamHandler(Protocol[A, R]):
    """``async def op(ctx, args: OpArgs) -> AsyncIterator[Event]`` (an async generator)."""

    def __call__(self, ctx: RequestContext, args: A, /) -> AsyncIterator[R]: ...


# What a middleware calls to go on: the handler's result, or a stream's event iterator.
Next = Callable[[RequestContext, dict[str, Any]], Awaitable[Any]]
Middleware = Callable[[RequestContext, dict[str, Any], Next], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    """One op's handler with the types it was checked against."""

    op: str
    spec: OpSpec
    handler: Callable[[RequestContext, Any], Any]


class Router:
    """op name -> handler. Every op in ``wire.ops.OPS`` must be routed (tested)."""

    def __init__(self, middleware: Sequence[Middleware] = ()) -> None:
        self.routes: dict[str, Route] = {}
        self._middleware = list(middleware)

    def use(self, middleware: Middleware) -> None:
        """Add a middleware inside the ones already added."""
        self._middleware.append(middleware)

    def add(self, op: str, handler: Handler[Any, Any]) -> None:
        """Route a request/reply op; its annotations must match the op's schema."""
        spec = lookup_op(op)
        if spec.streaming:
            raise ValueError(f"{op} is a streaming op; use add_stream")
        _check_types(op, spec, handler, streaming=False)
        self.routes[op] = Route(op, spec, handler)

    def add_stream(self, op: str, handler: StreamHandler[Any, Any]) -> None:
        """Route a streaming op (an async generator of events)."""
        spec = lookup_op(op)
        if not spec.streaming:
            raise ValueError(f"{op} is not a streaming op")
        _check_types(op, spec, handler, streaming=True)
        self.routes[op] = Route(op, spec, handler)

    def wrap(self, op: str, wrapper: Callable[[Any], Any]) -> None:
        """Replace ``op``'s handler by ``wrapper(handler)`` (instrumentation, tests), keeping
        the types it was checked against."""
        route = self.routes[op]
        self.routes[op] = Route(op, route.spec, wrapper(route.handler))

    def routed(self) -> set[str]:
        """Every op that has a handler."""
        return set(self.routes)

    async def call(self, ctx: RequestContext, raw_args: dict[str, Any]) -> Any:
        """Run one request through the middleware to its handler.

        Returns the result, or for a streaming op the handler's event iterator.
        """
        route = self.routes.get(ctx.op)
        if route is None:
            raise CfnError(f"{ctx.op} is not served by this cfnd", code="unknown_op")

        async def handle(ctx: RequestContext, raw: dict[str, Any]) -> Any:
            args: Args = decode_args(route.spec.args, raw)
            if route.spec.streaming:
                return route.handler(ctx, args)
            return await route.handler(ctx, args)

        chain: Next = handle
        for mw in reversed(self._middleware):
            chain = _bind(mw, chain)
        return await chain(ctx, raw_args)


def _bind(mw: Middleware, nxt: Next) -> Next:
    async def step(ctx: RequestContext, raw: dict[str, Any]) -> Any:
        return await mw(ctx, raw, nxt)

    return step


def _check_types(op: str, spec: OpSpec, handler: Callable[..., Any], *, streaming: bool) -> None:
    """The handler's ``args`` annotation is the op's Args; its return is the op's Result."""
    hints = typing.get_type_hints(handler)
    params = [p for p in inspect.signature(handler).parameters.values() if p.name != "self"]
    if len(params) != 2:
        raise TypeError(f"handler of {op} must take (ctx, args); it takes {len(params)} params")
    args_t = hints.get(params[1].name)
    if args_t is not spec.args:
        raise TypeError(f"handler of {op} takes {args_t}, the op's args are {spec.args}")
    ret = hints.get("return")
    if streaming:
        ok = typing.get_origin(ret) is AsyncIterator and typing.get_args(ret) == (spec.result,)
        expected = f"AsyncIterator[{spec.result.__name__}]"
    else:
        ok = ret is spec.result
        expected = spec.result.__name__
    if not ok:
        raise TypeError(f"handler of {op} returns {ret}, the op's result is {expected}")


# --------------------------------------------------------------------------- middleware


def log_requests(stats_errors: Callable[[], None]) -> Middleware:
    """One structlog line per request: op, caller, outcome (error code) and duration."""

    async def mw(ctx: RequestContext, raw: dict[str, Any], nxt: Next) -> Any:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await nxt(ctx, raw)
        except CfnError as err:
            outcome = err.instance_code
            stats_errors()
            raise
        except BaseException as exc:
            outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "internal_error"
            if outcome == "internal_error":
                stats_errors()
            raise
        finally:
            log.info(
                "request",
                op=ctx.op,
                id=ctx.request_id,
                uid=ctx.peer.uid,
                user=ctx.peer.user,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                outcome=outcome,
            )

    return mw


def refuse_while(draining: Callable[[], bool]) -> Middleware:
    """``shutting_down`` for new requests once the server drains."""

    async def mw(ctx: RequestContext, raw: dict[str, Any], nxt: Next) -> Any:
        if draining():
            raise ShuttingDown("cfnd is shutting down; retry when it is back")
        return await nxt(ctx, raw)

    return mw


async def authorize(ctx: RequestContext, raw: dict[str, Any], nxt: Next) -> Any:
    """The caller's role must reach the op's (viewer < operator < admin)."""
    spec = lookup_op(ctx.op)
    if ctx.peer.role < spec.role:
        raise denied(ctx, needed=spec.role.name)
    return await nxt(ctx, raw)


def denied(ctx: RequestContext, *, needed: str, why: str = "") -> PermissionDenied:
    """The ``permission_denied`` error for ``ctx``'s caller (also logged as ``denied``,
    so the audit can record it): names the op, the role or right needed and the
    caller's role."""
    have = ctx.peer.role.name + ("+exec" if ctx.peer.exec else "")
    log.warning("denied", op=ctx.op, uid=ctx.peer.uid, user=ctx.peer.user, needed=needed, have=have)
    return PermissionDenied(
        f"{ctx.op} needs {'the right' if needed == 'exec' else 'role'} {needed}{why}; "
        f"user {ctx.peer.user} (uid {ctx.peer.uid}) has role {have}",
        details={"op": ctx.op, "needed": needed, "have": have, "uid": ctx.peer.uid},
    )


def require_pool(ctx: RequestContext, agent_type: str) -> None:
    """Refuse an agent type outside the caller's team pools (admins are not limited)."""
    pools = ctx.peer.pools
    if pools is not None and ctx.peer.role < Role.admin and agent_type not in pools:
        raise denied(
            ctx, needed=f"agent pool {agent_type}", why=f" (pools: {', '.join(sorted(pools))})"
        )


class TeamLookup(Protocol):
    """What ``team_grants`` needs (``api.handlers.team_ops.TeamOps``)."""

    async def grant_for(self, user: str) -> Any: ...


def team_grants(teams: Callable[[], TeamLookup | None]) -> Middleware:
    """Raise the caller's role to what its team roles grant (never for a task), add
    ``exec`` and its agent pools. Redis down: the caller keeps its own role."""

    async def mw(ctx: RequestContext, raw: dict[str, Any], nxt: Next) -> Any:
        lookup = teams()
        if lookup is not None and not ctx.peer.task and ctx.peer.role < Role.admin:
            try:
                grant = await lookup.grant_for(ctx.peer.user)
            except Exception:  # an outage: no elevation (fail closed)
                grant = None
            if grant is not None and (grant.role is not None or grant.pools is not None):
                peer = ctx.peer
                role = max(peer.role, grant.role) if grant.role is not None else peer.role
                ctx.peer = dataclasses.replace(
                    peer, role=role, exec=peer.exec or grant.exec, pools=grant.pools
                )
        return await nxt(ctx, raw)

    return mw


def require_exec(ctx: RequestContext, what: str) -> None:
    """Refuse ``what`` (free text run as code) unless the caller holds ``exec``."""
    if not ctx.peer.exec:
        raise denied(ctx, needed="exec", why=f" ({what})")


def rate_limit(limiter: Callable[[], RateLimiter | None]) -> Middleware:
    """``rate_limited`` (with ``retry_after_s``) for a uid over its token bucket.
    Streaming ops are exempt (one request, then events), and so are root and cfnd's
    own user; ``limiter()`` None: no limit (``[auth] rate_per_s = 0``)."""

    async def mw(ctx: RequestContext, raw: dict[str, Any], nxt: Next) -> Any:
        lim = limiter()
        if lim is not None and not ctx.peer.rate_exempt and not lookup_op(ctx.op).streaming:
            wait_s = lim.take(ctx.peer.uid, time.monotonic())
            if wait_s > 0:
                retry = round(min(wait_s, 3600.0), 3)
                raise RateLimited(
                    f"uid {ctx.peer.uid} sends requests faster than {lim.rate_per_s:g}/s "
                    f"(burst {lim.burst:g}); retry in {retry:g} s",
                    details={"retry_after_s": retry, "uid": ctx.peer.uid},
                )
        return await nxt(ctx, raw)

    return mw


# Ops that report an outage in their result instead of failing with it.
STORE_FREE_OPS = frozenset({"hello", "ping", "status", "doctor", "config.show", "config.validate"})


class OutageSource(Protocol):
    """What ``answer_outages`` needs of the store (``cfn_daemon.store.Store``)."""

    @property
    def available(self) -> bool: ...

    async def wait_unavailable(self) -> None: ...

    def unavailable_error(self) -> StoreUnavailable: ...

    def as_outage(self, exc: BaseException) -> StoreUnavailable | None: ...

    def as_denied(self, exc: BaseException) -> StoreDenied | None: ...


def answer_outages(store: OutageSource, store_free: frozenset[str] = STORE_FREE_OPS) -> Middleware:
    """Every op that needs Redis answers ``store_unavailable`` during an outage, fast.

    While the store is known down the op is refused before it starts; when Redis fails
    (or freezes: the health probe's stall bound) while the op runs, the op is
    cancelled and answered at once instead of waiting out Redis timeouts; a connection
    error escaping a handler (also inside an exception group) is an outage, not a bug.
    """

    async def mw(ctx: RequestContext, raw: dict[str, Any], nxt: Next) -> Any:
        if ctx.op in store_free:
            return await nxt(ctx, raw)
        if not store.available:
            raise store.unavailable_error()
        work = asyncio.ensure_future(nxt(ctx, raw))
        down = asyncio.ensure_future(store.wait_unavailable())
        try:
            await asyncio.wait({work, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            down.cancel()
            if not work.done():
                work.cancel()
                # Bounded: the handler sees CancelledError and unwinds.
                await asyncio.wait({work})
        if work.cancelled():
            raise store.unavailable_error()
        exc = work.exception()
        if exc is not None:
            _raise_mapped(store, exc)
        result = work.result()
        if lookup_op(ctx.op).streaming:
            return _mapped_stream(store, result)
        return result

    return mw


def _raise_mapped(store: OutageSource, exc: BaseException) -> typing.NoReturn:
    if isinstance(exc, CfnError | msgspec.ValidationError):
        raise exc
    outage = store.as_outage(exc)
    if outage is not None:
        raise outage from None  # an outage is expected: no traceback in the log
    denied = store.as_denied(exc)
    if denied is not None:
        raise denied from None  # a deployment problem (Redis ACL), not a bug
    if isinstance(exc, BaseExceptionGroup):
        # A handler's task group failing with one specific error: answer with it.
        specific = [e for e in exc.exceptions if isinstance(e, CfnError)]
        if len(specific) == len(exc.exceptions):
            raise specific[0] from None
    raise exc


async def _mapped_stream(store: OutageSource, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        async for event in events:
            yield event
    except Exception as exc:
        _raise_mapped(store, exc)
