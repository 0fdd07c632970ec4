"""The console's pages (GET): overview, inbox, swarm, agent, tasks, task, run, epic.

Every page needs a session (else 401) and reads through ``Calls`` at the session's
role. Pages are complete server-rendered HTML: reading works without JavaScript;
``static/live.js`` only keeps them current.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from cfn_client.wire.errors import CfnError, InvalidArgs, NotFound
from cfn_client.wire.schema.swarm import TaskInfo
from cfn_daemon.web import calls as data
from cfn_daemon.web import svg, timeline
from cfn_daemon.web.auth import COOKIE, Identity, Session
from cfn_daemon.web.views import (
    SECURITY_HEADERS,
    cfn_error_page,
    error_page,
    page,
    session_of,
    unauthorized,
    web,
)

Route = Callable[[Request], Awaitable[Response]]
LOG_TAIL_BYTES = 16 * 1024
ARTIFACT_BYTES = 1 << 20
TASK_STATUSES = ("queued", "assigned", "running", "retrying", "succeeded", "failed", "cancelled")


def gated(fn: Callable[[Request, Session], Awaitable[Response]]) -> Route:
    """The route needs a live session (401 otherwise); CfnErrors become error pages."""

    async def route(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return unauthorized(request)
        request.state.session = session
        try:
            return await fn(request, session)
        except CfnError as err:
            return cfn_error_page(request, err)

    return route


async def login(request: Request) -> Response:
    """Spend the one-time token of ``cfnctl web`` and open a session."""
    session = web(request).book.redeem(request.query_params.get("token", ""))
    if session is None:
        return error_page(
            request,
            401,
            "This login link is used up or expired",
            "Each link of `cfnctl web` works once, for a few minutes. Run it again.",
        )
    # Redirect at once: the spent token leaves the address bar and the history.
    resp = RedirectResponse("/", status_code=303, headers=SECURITY_HEADERS)
    resp.set_cookie(
        COOKIE,
        session.id,
        max_age=int(web(request).book.session_ttl_s),
        httponly=True,
        samesite="strict",
        path="/",
    )
    return resp


@gated
async def overview(request: Request, s: Session) -> Response:
    state = web(request)
    # Shared by every open console: one computation per second at most (viewer-level
    # data, no per-role content).
    # A page load shows what happened before it, even within the cache's second.
    ov = await state.cache("overview").get(
        lambda: data.overview(state.calls, s.who), after_events=True
    )
    if request.query_params.get("fragment"):
        return page(request, "_overview.html", ov=ov)
    return page(request, "overview.html", ov=ov)


@gated
async def inbox(request: Request, s: Session) -> Response:
    runs = await data.escalated_runs(web(request).calls, s.who)
    return page(request, "inbox.html", runs=runs)


async def swarm_live(calls: data.Calls, who: Identity, swarm: str) -> dict[str, Any]:
    """What the swarm page keeps current: topology, agents, queues, repairs."""
    st = await calls(who, "swarm.status", swarm=swarm)
    drawing = svg.draw(st.swarm.topology, st.agents)
    repairs = await calls(who, "events.list", swarm=swarm, types=["agent.replaced"], limit=20)
    return {
        "st": st,
        "svg": svg.render(drawing, st.agents),
        "drawing": drawing,
        "repairs": repairs.events,
    }


@gated
async def swarm_page(request: Request, s: Session) -> Response:
    call = web(request).calls
    swarm = request.path_params["swarm"]
    live = await swarm_live(call, s.who, swarm)
    runs = (await call(s.who, "loop.list", swarm=swarm, limit=50)).runs
    epics = (await call(s.who, "epic.list", swarm=swarm)).epics
    return page(request, "swarm.html", runs=runs, epics=epics, **live)


@gated
async def agent_page(request: Request, s: Session) -> Response:
    call = web(request).calls
    swarm, agent_id = request.path_params["swarm"], request.path_params["agent"]
    agent = await call(s.who, "agent.status", swarm=swarm, agent=agent_id)
    recent: list[TaskInfo] = (await call(s.who, "task.list", swarm=swarm, limit=500)).tasks
    mine = [t for t in recent if t.agent == agent_id][:50]
    history = [
        e
        for e in (await call(s.who, "events.list", swarm=swarm, types=["agent"], limit=2000)).events
        if agent_id in (e.data.get("agent"), e.data.get("replacement"), e.data.get("id"))
    ][-30:]
    log_tail = await asyncio.to_thread(_tail, web(request).state_dir / "agents", agent_id)
    return page(
        request,
        "agent.html",
        agent=agent,
        tasks=mine,
        stats=data.agent_stats(mine),
        history=history,
        log_tail=log_tail,
    )


def _tail(log_dir: Path, agent_id: str) -> str | None:
    """The end of the agent's log file (local agents only), or None."""
    if not agent_id or "/" in agent_id or agent_id.startswith("."):
        return None
    path = log_dir / f"{agent_id}.log"
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - LOG_TAIL_BYTES))
            return f.read().decode(errors="replace")
    except OSError:
        return None


@gated
async def tasks_page(request: Request, s: Session) -> Response:
    call = web(request).calls
    swarm = request.path_params["swarm"]
    q = request.query_params
    status, type_, agent = q.get("status") or None, q.get("type") or None, q.get("agent") or None
    if status is not None and status not in TASK_STATUSES:
        raise InvalidArgs(f"status {status!r}: expected one of {', '.join(TASK_STATUSES)}")
    recent = (await call(s.who, "task.list", swarm=swarm, status=status, limit=500)).tasks
    tasks = data.task_filter(recent, status=status, type_=type_, agent=agent)[:200]
    dlq = (await call(s.who, "dlq.list", swarm=swarm, limit=50)).tasks
    return page(
        request,
        "tasks.html",
        swarm=swarm,
        tasks=tasks,
        dlq=dlq,
        statuses=TASK_STATUSES,
        types=sorted({t.type for t in recent}),
        agents=sorted({t.agent for t in recent if t.agent}),
        f={"status": status or "", "type": type_ or "", "agent": agent or ""},
    )


@gated
async def task_page(request: Request, s: Session) -> Response:
    swarm, task_id = request.path_params["swarm"], request.path_params["task"]
    task = await web(request).calls(s.who, "task.status", swarm=swarm, task=task_id)
    return page(request, "task.html", swarm=swarm, task=task)


@gated
async def run_page(request: Request, s: Session) -> Response:
    call = web(request).calls
    swarm, run_id = request.path_params["swarm"], request.path_params["run"]
    run = await call(s.who, "loop.status", swarm=swarm, run=run_id)
    evs = (
        await call(
            s.who,
            "events.list",
            swarm=swarm,
            since_ms=max(0, run.created_ms - 1),
            types=["loop"],
            limit=20_000,
        )
    ).events
    mine = timeline.of_run(evs, run_id)
    after = evs[-1].id if evs else f"{max(0, run.created_ms - 1)}-0"
    gate = timeline.gate_threshold(mine)
    live_url = f"/live/run/{swarm}/{run_id}?after={after}"
    if gate is not None:  # live entries draw the gate on their bars too
        live_url += f"&gate={gate}"
    return page(
        request, "run.html", run=run, sections=timeline.sections(mine), gate=gate,
        live_url=live_url,
    )  # fmt: skip


@gated
async def artifact_page(request: Request, s: Session) -> Response:
    """A run's saved artifact (a candidate's full patch, a check's log) as text."""
    swarm, run_id, name = (request.path_params[k] for k in ("swarm", "run", "name"))
    run = await web(request).calls(s.who, "loop.status", swarm=swarm, run=run_id)
    if name not in run.artifacts:
        raise NotFound(f"run {run_id} has no artifact {name!r}; it has {sorted(run.artifacts)}")
    root = (web(request).state_dir / "artifacts").resolve()
    text = await asyncio.to_thread(_read_inside, Path(run.artifacts[name]), root)
    if text is None:
        raise NotFound(f"artifact {name!r} of run {run_id} is gone (workspace retention)")
    return page(request, "artifact.html", run=run, name=name, text=text)


def _read_inside(path: Path, root: Path) -> str | None:
    """The file's text (at most ARTIFACT_BYTES) if it lies under ``root``."""
    try:
        real = path.resolve()
        if not real.is_relative_to(root):
            return None
        with real.open("rb") as f:
            data = f.read(ARTIFACT_BYTES + 1)
    except OSError:
        return None
    text = data[:ARTIFACT_BYTES].decode(errors="replace")
    return text + ("\n[... cut at 1 MiB]" if len(data) > ARTIFACT_BYTES else "")


@gated
async def epic_page(request: Request, s: Session) -> Response:
    swarm, epic_id = request.path_params["swarm"], request.path_params["epic"]
    epic = await web(request).calls(s.who, "epic.status", swarm=swarm, epic_id=epic_id)
    return page(request, "epic.html", swarm=swarm, epic=epic)
