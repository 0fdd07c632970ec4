"""The daemon's lifecycle: open resources, run one task group, drain on stop.

    async with Daemon(config) as d:
        await d.run()

Resources (state-dir lock, socket, Redis) are opened through one AsyncExitStack
and closed in reverse order. ``run`` starts every background loop as a named
child of one task group, sets ``ready``, and on ``request_stop`` drains the
server within the grace period before the children wind down.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import structlog

from cfn_client.wire.errors import CfnError, Conflict
from cfn_daemon.api.alerts import Alerts
from cfn_daemon.api.audit import AuditLog
from cfn_daemon.api.handlers.admin_ops import AdminOps
from cfn_daemon.api.handlers.audit_ops import AuditOps
from cfn_daemon.api.handlers.config_ops import ConfigOps
from cfn_daemon.api.handlers.loop_ops import LoopOps
from cfn_daemon.api.handlers.observe_ops import ObserveOps
from cfn_daemon.api.handlers.swarm_ops import SwarmOps
from cfn_daemon.api.handlers.system import SystemOps
from cfn_daemon.api.handlers.task_ops import TaskOps
from cfn_daemon.api.handlers.team_ops import TeamOps
from cfn_daemon.api.metrics import Exporter, Metrics, MetricsFeed, observe_requests
from cfn_daemon.api.redis_monitor import RedisMonitor
from cfn_daemon.api.router import (
    Middleware,
    Next,
    RequestContext,
    Router,
    answer_outages,
    authorize,
    log_requests,
    rate_limit,
    refuse_while,
    team_grants,
)
from cfn_daemon.api.server import ConnectionLimits, RoleResolver, Server
from cfn_daemon.cfnloop.epics import EpicService
from cfn_daemon.cfnloop.runner import LoopService
from cfn_daemon.core.ratelimit import RateLimiter
from cfn_daemon.queue.notify import NotifyHub
from cfn_daemon.settings.runtime import ConfigManager
from cfn_daemon.settings.schema import Config
from cfn_daemon.store import Store
from cfn_daemon.store.client import is_outage
from cfn_daemon.swarm.service import SwarmService
from cfn_daemon.util.aio import until_stopped
from cfn_daemon.util.logs import configure_logging
from cfn_daemon.util.restart import Keeper
from cfn_daemon.util.sdnotify import Notifier
from cfn_daemon.web.ops import WebOps

if TYPE_CHECKING:
    from cfn_daemon.web.app import Console

log = structlog.get_logger("cfn.daemon")


@contextlib.contextmanager
def state_dir_lock(state_dir: Path) -> Iterator[None]:
    """Hold an exclusive flock on the state dir: two daemons must never share it
    (they would fight over the embedded Redis)."""
    path = state_dir / "cfnd.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise Conflict(
                f"another cfnd (pid {holder}) is using state dir {state_dir}; stop it first "
                "or give this one another --state-dir",
                details={"state_dir": str(state_dir), "pid": holder},
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


class Daemon:
    """cfnd: owns the socket server, the store and the background loops."""

    def __init__(
        self,
        config: ConfigManager,
        *,
        env: Mapping[str, str] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config_manager = config
        self.env = dict(os.environ if env is None else env)
        self.notifier = notifier or Notifier({})
        self.ready = asyncio.Event()
        self._teams: TeamOps | None = None
        self._audit_mw: Middleware | None = None  # set once the store is open
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._stack = AsyncExitStack()
        self.started_at = time.time()
        self.started_mono = time.monotonic()

    @property
    def settings(self) -> Config:
        return self.config_manager.config

    # ------------------------------------------------------------------ resources

    async def __aenter__(self) -> Daemon:
        cfg = self.settings
        self.state_dir = cfg.state_path()
        self.socket_path = cfg.socket_path()
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._stack.enter_context(state_dir_lock(self.state_dir))
            self.router = Router()
            self.server = Server(
                path=self.socket_path,
                router=self.router,
                roles=RoleResolver(cfg.auth),
                mode=cfg.daemon.socket_mode,
                group=cfg.daemon.socket_group,
                max_frame_bytes=cfg.daemon.max_frame_bytes,
                max_connections=cfg.daemon.max_connections,
                max_inflight_per_connection=cfg.daemon.max_inflight_per_connection,
                limits=ConnectionLimits(
                    per_uid=cfg.daemon.max_connections_per_uid,
                    idle_timeout_s=cfg.daemon.idle_timeout_s,
                    frame_timeout_s=cfg.daemon.frame_timeout_s,
                ),
            )
            # Outermost first: every routed request is logged, refused while draining,
            # authorised, and answered store_unavailable while Redis is down (added below).
            self.router.use(log_requests(self.server.count_error))
            self.metrics = Metrics()
            self.router.use(observe_requests(self.metrics))
            self.router.use(refuse_while(lambda: self.server.draining))
            # Outside authorisation: every denial is audited (the store is bound below).
            self.router.use(self._audited)
            limiter = (
                RateLimiter(cfg.auth.rate_per_s, cfg.auth.rate_burst)
                if cfg.auth.rate_per_s > 0
                else None
            )
            self.router.use(rate_limit(lambda: limiter))
            self.router.use(team_grants(lambda: self._teams))
            self.router.use(authorize)
            # Bind before starting Redis so a second cfnd fails fast and touches nothing.
            self.server.bind()
            self._stack.callback(self.server.unlink)
            self.store = await self._stack.enter_async_context(
                Store.open(cfg.redis, self.state_dir, self.env)
            )
            self.router.use(answer_outages(self.store))
            self.alerts = Alerts(self.store)
            self.audit = AuditLog(self.store, self.alerts, lambda: self.settings.audit)
            self.redis_monitor = RedisMonitor(
                self.store,
                self.alerts,
                lambda: self.settings.monitor,
                lambda: self.settings.redis.command_timeout_s,
            )
            self._audit_mw = self.audit.middleware()
        except BaseException:
            await self._stack.aclose()
            raise
        self.config_manager.on_change(self._config_changed)
        self.hub = NotifyHub(self.store)
        self.keeper = Keeper(is_outage=is_outage, wait_available=self.store.wait_available)
        self.swarms = SwarmService(
            self.store, self.config_manager, self.hub, self.state_dir, self.keeper
        )
        self.metrics_feed = MetricsFeed(self.metrics, self.store, self.swarms)
        self.exporter = Exporter(cfg.metrics, self.metrics_feed)
        if cfg.metrics.enabled:
            await self.exporter.start()
            self._stack.push_async_callback(self.exporter.close)
        SystemOps(
            store=self.store,
            metrics=lambda: (self.exporter.url, self.exporter.error),
            config=self.config_manager,
            server=self.server,
            state_dir=self.state_dir,
            started_at=self.started_at,
            started_mono=self.started_mono,
        ).register(self.router)
        ConfigOps(store=self.store, config=self.config_manager).register(self.router)
        self._teams = TeamOps(self.store.redis, self.store.keys)
        self._teams.register(self.router)
        SwarmOps(self.swarms).register(self.router)
        ObserveOps(self.swarms).register(self.router)
        AdminOps(self.swarms, self.store, self.config_manager).register(self.router)
        TaskOps(self.swarms, self._stop).register(self.router)
        self.loops = LoopService(self.swarms, self.hub)
        self.epics = EpicService(self.loops)
        LoopOps(self.loops, self.epics).register(self.router)
        AuditOps(self.audit, self.redis_monitor).register(self.router)
        self.web: Console | None = None
        if cfg.web.enabled:
            try:
                self.web = self._console()
            except BaseException:
                await self._stack.aclose()
                raise
        web = self.web
        WebOps(lambda: (web.base_url, web.book) if web is not None else None).register(self.router)
        return self

    def _console(self) -> Console:
        """The web console, bound to its port (imported only when enabled)."""
        from cfn_daemon.web.app import Console

        async def swarm_ids() -> list[str]:
            return [s.id for s in await self.swarms.all() if s.status != "destroyed"]

        console = Console(
            self.settings.web,
            router=self.router,
            hub=self.hub,
            redis=lambda: self.store.redis,
            keys=self.store.keys,
            swarms=swarm_ids,
            state_dir=self.state_dir,
            stop=self._stop,
        )
        console.bind()
        self._stack.callback(console.close)
        return console

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()
        log.info("cfnd_stopped")

    async def _audited(self, ctx: RequestContext, raw: dict[str, Any], nxt: Next) -> Any:
        # The audit needs the store, opened after the middleware chain is laid out.
        mw = self._audit_mw
        return await (nxt(ctx, raw) if mw is None else mw(ctx, raw, nxt))

    # ------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """Begin a graceful shutdown (signal-handler safe: it only sets an event)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Re-read the config file and environment (SIGHUP)."""
        self._reload.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        """Serve until ``request_stop``; then drain and return."""
        cfg = self.settings.daemon
        # Swarm runtimes end with their own stop event, after the server has drained.
        swarm_stop = asyncio.Event()
        interval_s = self.notifier.watchdog_interval_s
        children: dict[str, tuple[Callable[[], Awaitable[None]], asyncio.Event]] = {
            "store-health": (lambda: self.store.run_health(self._stop), self._stop),
            "store-watch": (self._store_watch, self._stop),
            "config-reload": (self._reloader, self._stop),
            "notify-hub": (lambda: self.hub.run(self._stop), self._stop),
            "swarms": (lambda: self.swarms.run(swarm_stop), swarm_stop),
            "loops": (lambda: self.loops.run(swarm_stop), swarm_stop),
            "epics": (lambda: self.epics.run(swarm_stop), swarm_stop),
        }
        if self.settings.metrics.enabled:
            children["metrics"] = (
                lambda: self.metrics_feed.run(self.settings.metrics, self._stop),
                self._stop,
            )
        if self.settings.monitor.enabled:
            children["redis-monitor"] = (lambda: self.redis_monitor.run(self._stop), self._stop)
        if self.store.embedded is not None:
            children["embedded-redis"] = (self._supervise_embedded, self._stop)
        if interval_s:
            children["watchdog"] = (lambda: self._watchdog(interval_s), self._stop)
        if (web := self.web) is not None:
            children["web-console"] = (lambda: web.serve(self._stop), self._stop)
        async with asyncio.TaskGroup() as tg:
            serve = tg.create_task(self.server.serve(), name="server")
            # One bad moment of a child (a Redis error, a bug) restarts that child;
            # it never ends cfnd (util.restart).
            for name, (body, stop) in children.items():
                tg.create_task(self.keeper.run(name, body, stop), name=name)
            self.ready.set()
            self.notifier.notify("READY=1")
            self._notify_status()
            log.info(
                "cfnd_ready",
                socket=str(self.socket_path),
                pid=os.getpid(),
                store=self.store.mode,
                redis=self.store.display_url,
            )
            await self._stop.wait()
            self.notifier.notify("STOPPING=1", "STATUS=draining")
            log.info("cfnd_stopping", grace_s=cfg.shutdown_grace_s)
            await self.server.shutdown(serve, cfg.shutdown_grace_s, cfg.shutdown_hard_s)
            swarm_stop.set()
            # The other children watch the stop event and return by themselves.

    # ------------------------------------------------------------------ background loops

    async def _store_watch(self) -> None:
        """Follow Redis availability: reload runtime overrides whenever it (re)appears,
        and tell systemd (``systemctl status cfnd`` shows the STATUS line)."""
        while not self._stop.is_set():
            if not await until_stopped(self.store.wait_available(), self._stop):
                return
            try:
                await self.config_manager.load_overrides(self.store)
            except CfnError as exc:
                log.warning("config_overrides_unavailable", error=str(exc))
            self._notify_status()
            if not await until_stopped(self.store.wait_unavailable(), self._stop):
                return
            self._notify_status()

    def _notify_status(self) -> None:
        state = "available" if self.store.available else "UNAVAILABLE"
        self.notifier.notify(f"STATUS=serving on {self.socket_path}; Redis {state}")

    async def _reloader(self) -> None:
        """SIGHUP: re-read file and env; a broken file keeps the running config."""
        while await until_stopped(self._reload.wait(), self._stop):
            self._reload.clear()
            # systemd's reload protocol (Type=notify-reload): RELOADING=1 ... READY=1.
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")
            try:
                restart = self.config_manager.reload(os.environ)
            except (CfnError, OSError) as exc:
                details = exc.details if isinstance(exc, CfnError) else {}
                log.error("config_reload_failed", error=str(exc), **details)
                self.notifier.notify("READY=1", f"STATUS=config reload failed: {exc}")
                continue
            log.info("config_reloaded", needs_restart=restart)
            self.notifier.notify("READY=1", "STATUS=config reloaded")

    async def _supervise_embedded(self) -> None:
        """Restart the private redis-server if it dies (with backoff); AOF brings the data."""
        embedded = self.store.embedded
        assert embedded is not None
        failures = 0
        while not self._stop.is_set():
            if embedded.pid is not None:
                if not await until_stopped(embedded.wait(), self._stop):
                    return
                log.error(
                    "embedded_redis_died",
                    returncode=embedded.returncode,
                    log=str(embedded.log_path),
                )
            delay_s = min(0.2 * 2**failures, 30.0)
            failures += 1
            if not await until_stopped(asyncio.sleep(delay_s), self._stop):
                return
            try:
                await embedded.stop()  # reaps the dead process
                await embedded.start()
            except CfnError as exc:
                log.error("embedded_redis_restart_failed", error=str(exc), attempt=failures)
                continue
            log.info("embedded_redis_restarted", pid=embedded.pid, attempt=failures)
            failures = 0

    async def _watchdog(self, interval_s: float) -> None:
        while await until_stopped(asyncio.sleep(interval_s), self._stop):
            self.notifier.notify("WATCHDOG=1")

    def _config_changed(self, old: Config, new: Config) -> None:
        if old.redis.command_timeout_s != new.redis.command_timeout_s:
            self.store.set_command_timeout(new.redis.command_timeout_s)
        if (old.daemon.log_level, old.daemon.log_format) != (
            new.daemon.log_level,
            new.daemon.log_format,
        ):
            configure_logging(new.daemon.log_format, new.daemon.log_level)
