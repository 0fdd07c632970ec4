"""The console's actions (POST): answer an escalation, retry or cancel a task, requeue
the dead-letter queue, log out.

Each action needs a session (401), a same-origin request carrying the session's CSRF
token (403), and then the op's own role check in the router (a viewer gets 403 from
``permission_denied``, as cfnctl would). Success redirects back to the page the form
was on (POST/redirect/GET), so reloading never repeats an action.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from cfn_client.wire.errors import CfnError, InvalidArgs
from cfn_daemon.web.auth import COOKIE, CSRF_FIELD, Session, csrf_ok, same_origin
from cfn_daemon.web.views import (
    SECURITY_HEADERS,
    cfn_error_page,
    error_page,
    session_of,
    unauthorized,
    web,
)

Action = Callable[[Request, Session, FormData], Awaitable[None]]
MAX_TEXT = 10_000  # feedback and reasons: bounded, like any other input


def _back(form: FormData, default: str) -> str:
    """Where to go after the action: a local path only (no open redirect)."""
    target = str(form.get("next") or default)
    return target if target.startswith("/") and not target.startswith("//") else default


def action(fn: Action) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return unauthorized(request)
        request.state.session = session
        if not same_origin(request.headers.get("origin"), request.headers.get("host")):
            return error_page(request, 403, "Cross-site request refused", "Wrong Origin.")
        form = await request.form(max_files=0, max_fields=20)
        presented = form.get(CSRF_FIELD)
        if not csrf_ok(session, presented if isinstance(presented, str) else None):
            return error_page(
                request, 403, "Missing or wrong CSRF token", "Reload the page and try again."
            )
        try:
            await fn(request, session, form)
        except CfnError as err:
            return cfn_error_page(request, err)
        return RedirectResponse(_back(form, "/"), status_code=303, headers=SECURITY_HEADERS)

    return route


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    text = value if isinstance(value, str) else ""
    if len(text) > MAX_TEXT:
        raise InvalidArgs(f"{name}: at most {MAX_TEXT} characters, got {len(text)}")
    return text.strip()


async def _call(request: Request, s: Session, op: str, **args: Any) -> Any:
    return await web(request).calls(s.who, op, **args)


@action
async def run_approve(request: Request, s: Session, form: FormData) -> None:
    p = request.path_params
    await _call(request, s, "loop.approve", swarm=p["swarm"], run=p["run"],
                reason=_text(form, "reason"))  # fmt: skip


@action
async def run_reject(request: Request, s: Session, form: FormData) -> None:
    p = request.path_params
    await _call(request, s, "loop.reject", swarm=p["swarm"], run=p["run"],
                feedback=_text(form, "feedback"))  # fmt: skip


@action
async def run_extend(request: Request, s: Session, form: FormData) -> None:
    p = request.path_params
    raw = _text(form, "max_loop2")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidArgs(f"max Loop-2 rounds {raw!r}: expected a whole number 1..100")
    await _call(request, s, "loop.extend", swarm=p["swarm"], run=p["run"], max_loop2=int(raw))


@action
async def run_cancel(request: Request, s: Session, form: FormData) -> None:
    p = request.path_params
    await _call(request, s, "loop.cancel", swarm=p["swarm"], run=p["run"],
                reason=_text(form, "reason"))  # fmt: skip


@action
async def task_retry(request: Request, s: Session, form: FormData) -> None:
    p = request.path_params
    await _call(request, s, "task.retry", swarm=p["swarm"], task=p["task"])


@action
async def task_cancel(request: Request, s: Session, form: FormData) -> None:
    p = request.path_params
    await _call(request, s, "task.cancel", swarm=p["swarm"], task=p["task"])


@action
async def dlq_requeue(request: Request, s: Session, form: FormData) -> None:
    task = _text(form, "task") or None
    await _call(request, s, "dlq.requeue", swarm=request.path_params["swarm"], task=task)


async def logout(request: Request) -> Response:
    """End the session (CSRF-checked like any action) and forget the cookie."""
    session = session_of(request)
    if session is None:
        return unauthorized(request)
    form = await request.form(max_files=0, max_fields=5)
    presented = form.get(CSRF_FIELD)
    if not csrf_ok(session, presented if isinstance(presented, str) else None):
        return error_page(request, 403, "Missing or wrong CSRF token", "Reload and try again.")
    web(request).book.end(session.id)
    resp = error_page(request, 200, "Logged out", "Run `cfnctl web` to log in again.")
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return resp
