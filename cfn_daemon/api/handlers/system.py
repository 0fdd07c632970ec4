"""System ops: hello, ping, status, doctor."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cfn_client import __version__
from cfn_client.wire.errors import CfnError, ProtocolError
from cfn_client.wire.protocol import PROTOCOL_VERSION, HelloArgs, HelloResult
from cfn_client.wire.schema.system import (
    Check,
    DoctorArgs,
    DoctorResult,
    PingArgs,
    PingResult,
    ServerStats,
    StatusArgs,
    StatusResult,
    SwarmCounts,
)
from cfn_daemon.agent import types as agent_types
from cfn_daemon.agent.checks import binary_version
from cfn_daemon.api.router import RequestContext, Router
from cfn_daemon.api.server import Server
from cfn_daemon.settings.runtime import ConfigManager
from cfn_daemon.settings.schema import AgentTypeConfig
from cfn_daemon.store import Store

# The oldest Redis cfn supports (streams with consumer groups, Lua, ACLs); CI runs 7.0.
MIN_REDIS = (6, 2, 0)
# Agent kinds that start a program doctor can look for.
PROGRAM_KINDS = ("claude", "codex", "check", "command")
LLM_KINDS = ("claude", "codex")


@dataclass
class SystemOps:
    """Handlers that describe the daemon itself."""

    store: Store
    config: ConfigManager
    server: Server
    state_dir: Path
    started_at: float  # time.time()
    started_mono: float  # time.monotonic()
    # The /metrics URL and why it is missing (app.Daemon's exporter).
    metrics: Callable[[], tuple[str | None, str | None]] = field(default=lambda: (None, None))

    def register(self, router: Router) -> None:
        router.add("hello", self.hello)
        router.add("ping", self.ping)
        router.add("status", self.status)
        router.add("doctor", self.doctor)

    async def hello(self, ctx: RequestContext, args: HelloArgs) -> HelloResult:
        if args.protocol != PROTOCOL_VERSION:
            raise ProtocolError(
                f"client speaks protocol {args.protocol}, cfnd speaks {PROTOCOL_VERSION}; "
                "install matching cfn versions",
                code="protocol_mismatch",
                details={"client": args.protocol, "server": PROTOCOL_VERSION},
            )
        return HelloResult(
            protocol=PROTOCOL_VERSION,
            server_version=__version__,
            pid=os.getpid(),
            uid=ctx.peer.uid,
            user=ctx.peer.user,
            role=ctx.peer.role.name,
            max_frame_bytes=self.server.max_frame_bytes,
        )

    async def ping(self, ctx: RequestContext, args: PingArgs) -> PingResult:
        return PingResult(server_time_ms=int(time.time() * 1000))

    async def status(self, ctx: RequestContext, args: StatusArgs) -> StatusResult:
        store_status = await self.store.status()
        swarms = SwarmCounts()
        if store_status.available:
            try:
                async with self.store.guard():
                    swarms.total = int(await self.store.redis.scard(self.store.keys.swarms))
            except CfnError:
                swarms.total = None
        stats = self.server.stats
        metrics_url, metrics_error = self.metrics()
        return StatusResult(
            version=__version__,
            pid=os.getpid(),
            uptime_s=round(time.monotonic() - self.started_mono, 3),
            started_at_ms=int(self.started_at * 1000),
            socket=str(self.server.path),
            state_dir=str(self.state_dir),
            config_sources=self.config.loaded.source_list(),
            store=store_status,
            swarms=swarms,
            server=ServerStats(
                connections=stats.connections,
                requests_total=stats.requests_total,
                errors_total=stats.errors_total,
                inflight=stats.inflight,
                closed_by_limits=stats.closed_by_limits,
            ),
            metrics_url=metrics_url,
            metrics_error=metrics_error,
        )

    async def doctor(self, ctx: RequestContext, args: DoctorArgs) -> DoctorResult:
        checks = [self._check_socket(), self._check_state_dir()]
        st = await self.store.status()
        checks.append(
            Check(
                name="redis.reachable",
                ok=st.available,
                detail=(
                    f"{st.mode} Redis at {st.url} answers in {st.latency_ms} ms"
                    if st.available
                    else f"{st.mode} Redis at {st.url} is unavailable: {st.error}"
                ),
                fix=""
                if st.available
                else (
                    "start Redis (or fix [redis] url / CFN_REDIS_URL); cfnd reconnects by itself"
                ),
            )
        )
        if st.available:
            checks += await self._redis_checks(st.version, st.aof_enabled, st.rdb_saves, st.mode)
        checks += await self._agent_type_checks()
        ok = all(c.ok or c.warning for c in checks)
        return DoctorResult(ok=ok, checks=checks)

    async def _redis_checks(
        self, version: str | None, aof: bool | None, saves: str | None, mode: str
    ) -> list[Check]:
        out: list[Check] = []
        parsed = tuple(int(p) for p in (version or "0").split(".")[:3] if p.isdigit())
        out.append(
            Check(
                name="redis.version",
                ok=parsed >= MIN_REDIS,
                detail=f"Redis {version}; cfn needs >= {'.'.join(map(str, MIN_REDIS))}",
                fix="upgrade Redis to 6.2 or newer",
            )
        )
        # saves None: CONFIG is renamed or denied, so the RDB schedule is unknown (not
        # "off"); INFO still shows whether AOF is on.
        durable = bool(aof) or bool(saves)
        save_text = "unknown (CONFIG GET refused or renamed)" if saves is None else saves or "off"
        out.append(
            Check(
                name="redis.persistence",
                ok=durable,
                warning=True,
                detail=(
                    f"appendonly={'yes' if aof else 'no'}, save={save_text}"
                    + (
                        ""
                        if durable
                        else (
                            ": cannot tell whether RDB snapshots are taken"
                            if saves is None
                            else ": swarms, tasks and runs are lost if Redis restarts"
                        )
                    )
                ),
                fix=""
                if durable
                else ("enable AOF: `CONFIG SET appendonly yes` and `appendonly yes` in redis.conf"),
            )
        )
        try:
            async with self.store.guard():
                info = await self.store.redis.info("memory")
            policy = str(info.get("maxmemory_policy", "noeviction"))
            maxmemory = int(info.get("maxmemory", 0))
        except CfnError as exc:
            return [*out, Check(name="redis.memory", ok=False, detail=str(exc))]
        # Any policy but noeviction drops coordination keys (tasks) once maxmemory is hit;
        # without a maxmemory it is only a warning (a limit set later would evict).
        safe = policy == "noeviction"
        out.append(
            Check(
                name="redis.eviction",
                ok=safe,
                warning=not safe and maxmemory == 0,
                detail=f"maxmemory={maxmemory} policy={policy} (from INFO memory)",
                fix=""
                if safe
                else ("set maxmemory-policy noeviction: evicting keys would silently drop tasks"),
            )
        )
        return out

    async def _agent_type_checks(self) -> list[Check]:
        """One check per configured agent type that starts a program (found, and its
        ``--version``), plus a warning one for the built-in claude types."""
        configured = self.config.config.agent_types
        probes = []
        for name in sorted(configured):
            if configured[name].kind in PROGRAM_KINDS:
                probes.append(self._agent_type_check(name, configured, warning=False))
        builtin = [n for n in agent_types.builtin_names() if n not in configured]
        claude_builtin = next((n for n in builtin if n not in ("shell", "checker")), None)
        if claude_builtin is not None:
            probes.append(self._agent_type_check(claude_builtin, configured, warning=True))
        return list(await asyncio.gather(*probes))

    async def _agent_type_check(
        self, name: str, configured: Mapping[str, AgentTypeConfig], *, warning: bool
    ) -> Check:
        check_name = "agent_types.builtin" if warning else f"agent_types.{name}"
        try:
            spec = agent_types.resolve(name, configured)
        except CfnError as exc:
            return Check(
                name=check_name, ok=False, detail=exc.message, fix=f"fix [agent_types.{name}]"
            )
        problem = agent_types.binary_problem(spec)
        if problem is not None:
            return Check(
                name=check_name,
                ok=False,
                warning=warning,
                detail=problem.split("; ", 1)[0],
                fix=problem.split("; ", 1)[-1],
            )
        ran, version = await binary_version(spec.executor)
        kind = spec.executor.kind
        # `--version` is what every LLM CLI answers; a plain command (sh, a script)
        # need not understand it, so there it is informational only.
        ok = ran or kind not in LLM_KINDS
        detail = f"{kind} agent type {name!r}: {version}"
        if warning:
            detail = f"built-in agent types (coder, reviewer, ...) run {version}"
        return Check(
            name=check_name,
            ok=ok,
            warning=warning,
            detail=detail,
            fix=""
            if ok
            else f"reinstall {spec.executor.program} or set `binary` in [agent_types.{name}]",
        )

    def _check_socket(self) -> Check:
        path = self.server.path
        try:
            st = os.stat(path)
        except OSError as exc:
            return Check(
                name="daemon.socket",
                ok=False,
                detail=f"{path}: {exc}",
                fix="restart cfnd to recreate its socket",
            )
        mode = stat.S_IMODE(st.st_mode)
        want = self.server.mode
        return Check(
            name="daemon.socket",
            ok=mode == want,
            detail=f"{path} mode {mode:04o} (configured {want:04o}), owner uid {st.st_uid}",
            fix="" if mode == want else f"chmod {want:04o} {path}, or restart cfnd",
        )

    def _check_state_dir(self) -> Check:
        ok = os.access(self.state_dir, os.W_OK | os.X_OK)
        return Check(
            name="daemon.state_dir",
            ok=ok,
            detail=f"{self.state_dir} writable: {ok}",
            fix="" if ok else f"make {self.state_dir} writable by the cfnd user",
        )
