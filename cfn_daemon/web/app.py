"""The console's Starlette app, served by uvicorn inside cfnd's own event loop.

``Console.bind`` opens the loopback listening socket while cfnd starts (a taken port
fails cfnd's start-up, like a taken Unix socket); ``Console.serve`` is one child of
cfnd's task group: the uvicorn server and the live-event feed, until cfnd stops.
Uvicorn is told not to touch signals (cfnd owns SIGTERM/SIGHUP) nor logging.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cfn_daemon.api.router import Router
from cfn_daemon.queue.notify import NotifyHub
from cfn_daemon.settings.schema import WebConfig
from cfn_daemon.store.keys import Keys
from cfn_daemon.util.aio import until_stopped
from cfn_daemon.web import actions, pages, sse
from cfn_daemon.web.auth import SessionBook
from cfn_daemon.web.calls import Calls
from cfn_daemon.web.live import LiveFeed
from cfn_daemon.web.views import HERE, WebState, error_page, session_of, unauthorized

log = structlog.get_logger("cfn.web")
GRACE_S = 2.0


async def _not_found(request: Request, exc: Exception) -> Response:
    if session_of(request) is None:
        return unauthorized(request)  # without a session nothing, not even what exists
    return error_page(request, 404, "Not found", "No such page.")


def build_app(state: WebState) -> Starlette:
    """Routes: pages (GET), actions (POST), live streams (SSE), static files."""
    run = "/swarms/{swarm}/runs/{run}"
    task = "/swarms/{swarm}/tasks/{task}"
    routes = [
        Route("/login", pages.login),
        Route("/logout", actions.logout, methods=["POST"]),
        Route("/", pages.overview),
        Route("/inbox", pages.inbox),
        Route("/swarms/{swarm}", pages.swarm_page),
        Route("/swarms/{swarm}/agents/{agent}", pages.agent_page),
        Route("/swarms/{swarm}/tasks", pages.tasks_page),
        Route(task, pages.task_page),
        Route(f"{task}/retry", actions.task_retry, methods=["POST"]),
        Route(f"{task}/cancel", actions.task_cancel, methods=["POST"]),
        Route("/swarms/{swarm}/dlq/requeue", actions.dlq_requeue, methods=["POST"]),
        Route(run, pages.run_page),
        Route(f"{run}/artifacts/{{name}}", pages.artifact_page),
        Route(f"{run}/approve", actions.run_approve, methods=["POST"]),
        Route(f"{run}/reject", actions.run_reject, methods=["POST"]),
        Route(f"{run}/extend", actions.run_extend, methods=["POST"]),
        Route(f"{run}/cancel", actions.run_cancel, methods=["POST"]),
        Route("/swarms/{swarm}/epics/{epic}", pages.epic_page),
        Route("/live/overview", sse.overview_stream),
        Route("/live/run/{swarm}/{run}", sse.run_stream),
        Route("/live/inbox", sse.inbox_stream),
        Route("/live/swarm/{swarm}", sse.swarm_stream),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found})
    app.state.web = state
    return app


class _Server(uvicorn.Server):
    """uvicorn as a library: cfnd handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Console:
    """The web console of one cfnd (``[web] enabled = true``)."""

    def __init__(
        self,
        cfg: WebConfig,
        *,
        router: Router,
        hub: NotifyHub,
        redis: Callable[[], Any],
        keys: Keys,
        swarms: Callable[[], Awaitable[list[str]]],
        state_dir: Path,
        stop: asyncio.Event,
    ) -> None:
        self.cfg = cfg
        self.book = SessionBook(token_ttl_s=cfg.token_ttl_s, session_ttl_s=cfg.session_ttl_s)
        self.feed = LiveFeed(redis, keys, hub, swarms)
        self.state = WebState(
            calls=Calls(router), book=self.book, feed=self.feed, state_dir=state_dir, stop=stop
        )
        self.app = build_app(self.state)
        self._sock: socket.socket | None = None

    def bind(self) -> None:
        """Open the listening socket now (a taken port fails cfnd's start)."""
        host, port = self.cfg.address()
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
            sock.listen(128)
        except OSError as exc:
            sock.close()
            from cfn_client.wire.errors import Conflict

            raise Conflict(
                f"the web console cannot listen on {self.cfg.listen}: {exc.strerror}; "
                "pick another `[web] listen` port",
                details={"listen": self.cfg.listen},
            ) from None
        sock.setblocking(False)
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def base_url(self) -> str:
        assert self._sock is not None, "bind() first"
        host, port = self._sock.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until ``stop``: uvicorn and the live feed, side by side."""
        assert self._sock is not None, "bind() first"
        config = uvicorn.Config(
            self.app,
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=int(GRACE_S),
        )
        server = _Server(config)
        log.info("web_console_listening", url=self.base_url)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.feed.run(stop), name="web-live-feed")
            serving = tg.create_task(server.serve(sockets=[self._sock]), name="web-server")
            await until_stopped(asyncio.shield(serving), stop)
            server.should_exit = True
        self._sock = None  # uvicorn closed it
