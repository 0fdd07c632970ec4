"""Server-sent event streams of the pages (``static/live.js`` applies them).

``/live/run/{swarm}/{run}``: each new ``loop.*`` event of the run, rendered as its
timeline entry (the same macro as the page), plus the run's new status and, once it
escalates, the answer forms. Rendering is pure: no Redis read per client per event.

``/live/overview``, ``/live/inbox``, ``/live/swarm/{swarm}``: the page's live part
re-rendered after events, at most once a second per client; the data behind it is
read once a second at most for all clients (``Cached``).

Both resume after the page's last event id (``?after=`` or ``Last-Event-ID``), so
nothing that happened between rendering the page and connecting is lost.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from cfn_client.wire.protocol import Role
from cfn_client.wire.schema.swarm import Event
from cfn_daemon.web import calls as data
from cfn_daemon.web import pages, timeline
from cfn_daemon.web.auth import CSRF_FIELD, Session
from cfn_daemon.web.live import stream_id
from cfn_daemon.web.pages import gated
from cfn_daemon.web.views import WebState, web

KEEPALIVE_S = 15.0
REFRESH_S = 5.0
FRAGMENT_MIN_GAP_S = 1.0
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def _after(request: Request) -> str:
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0-0"
    return raw if _STREAM_ID.match(raw) else "0-0"


def _gate(request: Request) -> float | None:
    """The run's gate threshold as the page knew it (``?gate=``), if any."""
    try:
        gate = float(request.query_params.get("gate", ""))
    except ValueError:
        return None
    return gate if 0.0 <= gate <= 1.0 else None


def message(kind: str, payload: dict[str, Any], eid: str | None = None) -> str:
    """One SSE message (JSON data on one line)."""
    head = f"event: {kind}\n" + (f"id: {eid}\n" if eid else "")
    return head + "data: " + json.dumps(payload, separators=(",", ":")) + "\n\n"


async def _events(state: WebState, swarm: str, after: str) -> AsyncIterator[Event | None]:
    """Events of ``swarm`` after ``after`` (backlog, then live); None: a keepalive tick."""
    with state.feed.subscribe(swarm, after if after != "0-0" else None) as sub:
        last = stream_id(after)
        ev: Event | None
        if after != "0-0":
            for ev in await state.feed.backlog(swarm, after):
                last = max(last, stream_id(ev.id))
                yield ev
        while not state.stop.is_set():
            try:
                ev = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield None
                continue
            if ev is None:
                return  # dropped (too slow) or cfnd stops: the browser reconnects
            if stream_id(ev.id) <= last:
                continue  # already sent from the backlog
            yield ev


def _stream(body: AsyncIterator[str]) -> Response:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@gated
async def run_stream(request: Request, s: Session) -> Response:
    state = web(request)
    swarm, run_id = request.path_params["swarm"], request.path_params["run"]
    run = await state.calls(s.who, "loop.status", swarm=swarm, run=run_id)  # 404 if unknown
    macros: Any = state.env.get_template("_timeline.html").make_module(
        {"can_act": s.who.role >= Role.operator, "csrf": s.csrf, "csrf_field": CSRF_FIELD}
    )
    after = _after(request)

    gate = _gate(request)

    async def body() -> AsyncIterator[str]:
        nonlocal gate
        yield "retry: 2000\n\n"
        async for ev in _events(state, run.swarm, after):
            if ev is None:
                yield ": keepalive\n\n"
                continue
            if not ev.type.startswith("loop.") or ev.data.get("run") != run_id:
                continue
            if ev.type == "loop.gate" and isinstance(ev.data.get("gate_threshold"), int | float):
                gate = float(ev.data["gate_threshold"])
            g = timeline.group_of(ev)
            yield message(
                "entry",
                {
                    "group": g.id,
                    "group_html": str(macros.group(g)),
                    "html": str(macros.entry(ev, gate)),
                },
                ev.id,
            )
            status = timeline.status_after(ev)
            if status is not None:
                yield message(
                    "status",
                    {"status": status, "actions_html": str(macros.actions(run, status))},
                )

    return _stream(body())


def _fragment_stream(
    state: WebState,
    swarm: str | None,
    element_id: str,
    render: Callable[[float | None], Awaitable[str]],
) -> Response:
    """After events of ``swarm`` (None: any), send ``render()`` as the new content of
    ``element_id`` (a burst of events makes one update, at most one a second), and
    every ``REFRESH_S`` anyway: ages tick, and some changes (an agent stopping) come
    with no event. ``render(max_age_s)`` reads through a cache shared by all clients,
    so the refreshes of N consoles cost one read every ``REFRESH_S``, not N."""

    async def body() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        last = ""
        with state.feed.subscribe(swarm) as sub:
            while not state.stop.is_set():
                max_age: float | None = None
                try:
                    ev = await asyncio.wait_for(sub.queue.get(), REFRESH_S)
                except TimeoutError:
                    max_age = REFRESH_S
                else:
                    if ev is None:
                        return
                    await asyncio.sleep(FRAGMENT_MIN_GAP_S)
                    while not sub.queue.empty():
                        if sub.queue.get_nowait() is None:
                            return
                html = await render(max_age)
                if html != last:  # most events change nothing this page shows
                    last = html
                    yield message("fragment", {"id": element_id, "html": html})
                else:
                    yield ": unchanged\n\n"

    return _stream(body())


@gated
async def overview_stream(request: Request, s: Session) -> Response:
    state = web(request)

    async def render(max_age_s: float | None) -> str:
        # Shared by every open console (viewer-level data): see _fragment_stream.
        ov = await state.cache("overview").get(lambda: data.overview(state.calls, s.who), max_age_s)
        return state.env.get_template("_overview.html").render(ov=ov)

    return _fragment_stream(state, None, "overview", render)


@gated
async def swarm_stream(request: Request, s: Session) -> Response:
    state = web(request)
    swarm = (await state.calls(s.who, "swarm.status", swarm=request.path_params["swarm"])).swarm

    async def render(max_age_s: float | None) -> str:
        ctx = await state.cache(f"swarm:{swarm.id}").get(
            lambda: pages.swarm_live(state.calls, s.who, swarm.id), max_age_s
        )
        return state.env.get_template("_swarm_live.html").render(**ctx)

    return _fragment_stream(state, swarm.id, "swarm-live", render)


@gated
async def inbox_stream(request: Request, s: Session) -> Response:
    state = web(request)

    async def render(max_age_s: float | None) -> str:
        runs = await state.cache("inbox").get(
            lambda: data.escalated_runs(state.calls, s.who), max_age_s
        )
        return state.env.get_template("_inbox.html").render(
            runs=runs,
            can_act=s.who.role >= Role.operator,
            csrf=s.csrf,
            csrf_field=CSRF_FIELD,
        )

    return _fragment_stream(state, None, "inbox", render)
