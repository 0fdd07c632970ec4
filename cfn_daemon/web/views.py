"""What the routes share: the session gate, the templates and their filters.

Templates are package data (``cfn_daemon/web/templates``), autoescaped Jinja2; the
stylesheet and the small live-update script are in ``static/``. Nothing is fetched
from elsewhere at run time and nothing is built at install time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from cfn_client.wire.errors import (
    CfnError,
    Conflict,
    InvalidArgs,
    NotFound,
    PermissionDenied,
    ShuttingDown,
    StoreUnavailable,
)
from cfn_client.wire.protocol import Role
from cfn_daemon.web import timeline
from cfn_daemon.web.auth import COOKIE, CSRF_FIELD, Session, SessionBook
from cfn_daemon.web.calls import Calls
from cfn_daemon.web.live import LiveFeed

HERE = Path(__file__).resolve().parent
NONE = "\N{EN DASH}"  # how a missing value reads
STATUS_OF_ERROR: dict[type[CfnError], int] = {
    InvalidArgs: 400,
    PermissionDenied: 403,
    NotFound: 404,
    Conflict: 409,
    StoreUnavailable: 503,
    ShuttingDown: 503,
}


def _ts(ms: Any) -> str:
    if not isinstance(ms, int) or ms <= 0:
        return NONE
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(ms: Any) -> str:
    if not isinstance(ms, int) or ms <= 0:
        return NONE
    return _duration(time.time() * 1000 - ms) + " ago"


def _duration(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return NONE
    s = float(ms) / 1000
    if s < 1:
        return f"{float(ms):.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _score(value: Any) -> str:
    return f"{float(value):.2f}" if isinstance(value, int | float) else NONE


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.Undefined,  # event data varies by type: missing keys read as empty
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        ts=_ts, ago=_ago, duration=_duration, score=_score, pct=timeline.percent,
        by_severity=timeline.by_severity,
    )  # fmt: skip
    return env


@dataclass
class Cached:
    """A value shared by every page that shows it, recomputed at most every ``max_age_s``
    (the overview: fifty open consoles cost one computation per second, not fifty).
    A page load asks ``after_events``: then a value whose computation began before the
    latest event (``generation()`` moved) is recomputed, however young."""

    generation: Callable[[], int] = lambda: 0
    max_age_s: float = 1.0
    value: Any = None
    at: float = 0.0
    seen: int = -1
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(
        self,
        compute: Callable[[], Awaitable[Any]],
        max_age_s: float | None = None,
        *,
        after_events: bool = False,
    ) -> Any:
        """The value, recomputed if older than ``max_age_s`` (default ``self.max_age_s``)
        or, with ``after_events``, if an event came since its computation began."""
        age = self.max_age_s if max_age_s is None else max_age_s
        async with self.lock:
            gen = self.generation()
            stale = after_events and gen != self.seen
            if self.value is None or stale or time.monotonic() - self.at >= age:
                started = time.monotonic()
                self.value = await compute()
                self.at, self.seen = started, gen
            return self.value


@dataclass
class WebState:
    """Everything a route needs; ``request.app.state.web``."""

    calls: Calls
    book: SessionBook
    feed: LiveFeed
    state_dir: Path
    stop: asyncio.Event
    env: jinja2.Environment = field(default_factory=environment)
    caches: dict[str, Cached] = field(default_factory=dict)

    def cache(self, name: str) -> Cached:
        if name not in self.caches:
            self.caches[name] = Cached(generation=lambda: self.feed.generation)
        return self.caches[name]


def web(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def session_of(request: Request) -> Session | None:
    return web(request).book.session(request.cookies.get(COOKIE))


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with the session's user, role and CSRF token."""
    session: Session | None = getattr(request.state, "session", None)
    html = (
        web(request)
        .env.get_template(template)
        .render(
            session=session,
            can_act=session is not None and session.who.role >= Role.operator,
            csrf_field=CSRF_FIELD,
            csrf=session.csrf if session else "",
            path=request.url.path,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


# No framing by other sites, no sniffing, no referrer to other sites (with
# "no-referrer" browsers send "Origin: null" on our own forms), and
# scripts and styles from this console only.
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'",
}


def error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    return page(request, "error.html", status_code, title=title, message=message)


def unauthorized(request: Request) -> Response:
    return error_page(
        request,
        401,
        "Log in first",
        "This console needs a session. Run `cfnctl web` on the machine where cfnd runs "
        "and open the link it prints (it works once).",
    )


def cfn_error_page(request: Request, err: CfnError) -> Response:
    code = next((c for t, c in STATUS_OF_ERROR.items() if isinstance(err, t)), 500)
    return error_page(request, code, err.instance_code.replace("_", " "), err.message)
