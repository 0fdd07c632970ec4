"""Login tokens, browser sessions and CSRF tokens of the web console.

``cfnctl web`` asks cfnd (``web.login``) for a one-time token bound to the caller's
role (or a lower one). ``GET /login?token=...`` spends it and opens a session: an
HttpOnly, SameSite=Strict cookie naming a random session id. Every mutating request
must also carry the session's CSRF token (a hidden form field), compared in constant
time. Both live in cfnd's memory only: a restart logs browsers out (run ``cfnctl web``
again) but loses no data, which lives in Redis.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from cfn_client.wire.protocol import Role

COOKIE = "cfn_session"
CSRF_FIELD = "csrf"
# Bounds: a flood of `cfnctl web` calls or logins cannot grow memory without limit.
MAX_TOKENS = 1000
MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a token or session speaks for: the socket peer that asked for it."""

    user: str
    uid: int
    gid: int
    role: Role


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    csrf: str
    who: Identity
    expires_at: float  # monotonic seconds


class SessionBook:
    """One-time login tokens and the sessions they open (in memory, bounded)."""

    def __init__(
        self,
        *,
        token_ttl_s: float,
        session_ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_ttl_s = token_ttl_s
        self.session_ttl_s = session_ttl_s
        self._clock = clock
        self._tokens: dict[str, tuple[Identity, float]] = {}
        self._sessions: dict[str, Session] = {}

    def issue_token(self, who: Identity) -> str:
        """A fresh login token for ``who``, valid once within ``token_ttl_s``."""
        self._expire()
        while len(self._tokens) >= MAX_TOKENS:
            self._tokens.pop(next(iter(self._tokens)))  # the oldest goes first
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (who, self._clock() + self.token_ttl_s)
        return token

    def redeem(self, token: str) -> Session | None:
        """Spend ``token`` (once) and open a session; None if unknown, used or expired."""
        self._expire()
        entry = self._tokens.pop(token, None)
        if entry is None:
            return None
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            who=entry[0],
            expires_at=self._clock() + self.session_ttl_s,
        )
        self._sessions[session.id] = session
        return session

    def session(self, session_id: str | None) -> Session | None:
        """The live session with this id, if any."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    @property
    def count(self) -> int:
        return len(self._sessions)

    def _expire(self) -> None:
        now = self._clock()
        for token in [t for t, (_, exp) in self._tokens.items() if exp <= now]:
            del self._tokens[token]


def csrf_ok(session: Session, presented: str | None) -> bool:
    """The request carries this session's CSRF token (constant-time comparison)."""
    return presented is not None and hmac.compare_digest(session.csrf, presented)


def same_origin(origin: str | None, host: str | None) -> bool:
    """A browser's Origin header (when it sends one) names this console's own host."""
    if origin is None:
        return True
    if origin == "null" or host is None:
        return False
    return origin.split("://", 1)[-1] == host
