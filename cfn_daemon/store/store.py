"""``Store``: cfnd's one handle on Redis, and whether Redis can be used right now.

The store opens even when an external Redis is down (cfnd stays up and reports it);
``run_health`` keeps probing with backoff and flips ``available`` both ways, and
``guard`` turns connection failures in request handlers into ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError, NoPermissionError, RedisClusterException, RedisError

from cfn_client.wire.errors import StoreDenied, StoreUnavailable
from cfn_client.wire.schema.system import StoreStatus
from cfn_daemon.settings.schema import RedisConfig
from cfn_daemon.store.client import (
    Client,
    build_client,
    describe_error,
    is_pool_exhausted,
    is_unavailable_error,
    permission_right,
    set_command_timeout,
)
from cfn_daemon.store.embedded import EmbeddedRedis
from cfn_daemon.store.keys import Keys
from cfn_daemon.store.urls import (
    ConnectionParams,
    Mode,
    check_embedded_config,
    embedded_params,
    resolve,
    uses_embedded,
)

log = structlog.get_logger("cfn.store")

# The probe client is separate from the main pool so that a pool full of blocking
# reads (XREADGROUP BLOCK) cannot starve the health check into a false "down".
PROBE_POOL_SIZE = 4
_MAX_EXPONENT = 30
_RECANCEL_S = 0.05


class Store:
    """The Redis client of cfnd plus its availability state; create it with ``open``."""

    def __init__(
        self,
        cfg: RedisConfig,
        params: ConnectionParams,
        *,
        embedded: EmbeddedRedis | None = None,
    ) -> None:
        self.cfg = cfg
        self.params = params
        self.mode: Mode = params.mode
        self.display_url = params.display_url
        self.keys = Keys(cfg.key_prefix)
        self.embedded = embedded
        self.redis: Client = build_client(params, cfg, pool_size=cfg.pool_size)
        # No redis-py retries on the probe: the health loop has its own backoff.
        self._probe_client: Client = build_client(params, cfg, pool_size=PROBE_POOL_SIZE, retries=0)
        self._available = False
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        self._wake = asyncio.Event()
        self._error: str | None = "not probed yet"
        self._latency_ms: float | None = None
        self._failures = 0
        self._retry_at: float | None = None
        self._down_since: float | None = time.monotonic()
        self._up_since: float | None = None
        self._version: str | None = None

    def set_command_timeout(self, timeout_s: float) -> None:
        """``redis.command_timeout_s`` changed at runtime: every client of ours uses it now."""
        self.cfg = msgspec.structs.replace(self.cfg, command_timeout_s=timeout_s)
        for client in (self.redis, self._probe_client):
            set_command_timeout(client, timeout_s)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, cfg: RedisConfig, state_dir: Path, env: Mapping[str, str]
    ) -> AsyncIterator[Store]:
        """Connect (starting the embedded server when no Redis is configured).

        Raises ``ConfigError`` for a bad config and ``EmbeddedStartError`` if the
        embedded server cannot start; an unreachable external Redis is *not* an
        error: the store opens with ``available`` false and the health loop retries.
        """
        if uses_embedded(cfg):
            check_embedded_config(cfg)
            async with EmbeddedRedis(cfg, state_dir) as server:
                store = cls(
                    cfg, embedded_params(server.socket_path, server.password), embedded=server
                )
                async with store._opened():
                    yield store
        else:
            store = cls(cfg, resolve(cfg, env))
            async with store._opened():
                yield store

    @contextlib.asynccontextmanager
    async def _opened(self) -> AsyncIterator[None]:
        try:
            await self._probe_and_record()
            log.info(
                "store_opened",
                mode=self.mode,
                url=self.display_url,
                available=self._available,
                key_prefix=self.keys.prefix,
                password_source=self.params.password_source,
            )
            yield
        finally:
            try:
                await self.redis.aclose()
            finally:
                await self._probe_client.aclose()

    # ------------------------------------------------------------------ state

    @property
    def probe_timeout_s(self) -> float:
        """How long one health PING may take before Redis counts as unavailable."""
        cfg = self.cfg
        return min(cfg.stall_timeout_s, cfg.connect_timeout_s + cfg.command_timeout_s)

    @property
    def available(self) -> bool:
        """Whether the last probe or command reached Redis."""
        return self._available

    @property
    def latency_ms(self) -> float | None:
        """Round-trip time of the last successful health PING (None while down)."""
        return self._latency_ms if self._available else None

    def report_failure(self, exc: BaseException) -> None:
        """A background loop saw ``exc``: if it is an outage, the store is unavailable
        from now on (and the health loop re-probes at once)."""
        if is_unavailable_error(exc):
            self._mark_unavailable(exc)

    def available_for_s(self) -> float:
        """Seconds Redis has been available without a break (0 while it is not).

        Heartbeats that could not reach Redis during an outage must not count as
        lapses: the supervisor judges them only once this exceeds the lapse time.
        """
        if self._up_since is None:
            return 0.0
        return time.monotonic() - self._up_since

    async def wait_available(self) -> None:
        """Return once Redis is (or becomes) available."""
        await self._up.wait()

    async def wait_unavailable(self) -> None:
        """Return once Redis is (or becomes) unavailable."""
        await self._down.wait()

    def retry_in_s(self) -> float | None:
        """Seconds until the next probe while unavailable, else None."""
        if self._available:
            return None
        if self._retry_at is None:
            return self.cfg.retry_base_s
        return round(max(0.0, self._retry_at - time.monotonic()), 3)

    def check(self) -> None:
        """Raise ``StoreUnavailable`` (with ``retry_after_s``) unless Redis is available."""
        if not self._available:
            raise self._unavailable_error()

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run Redis calls; a connection failure marks the store down and raises
        ``StoreUnavailable``. Other Redis errors (bad command, WRONGTYPE) pass through.

        A ``TimeoutError`` raised inside counts as an outage, so put a deadline of your
        own (``asyncio.timeout``) outside the guard, not inside it.

        >>> async with store.guard():
        ...     await store.redis.hset(key, mapping=fields)
        """
        self.check()
        try:
            yield
        except Exception as exc:
            outage = self.as_outage(exc)
            if outage is None:
                raise
            raise outage from exc

    def as_outage(self, exc: BaseException) -> StoreUnavailable | None:
        """The ``StoreUnavailable`` that ``exc`` stands for (a connection failure, also
        inside an exception group, or a busy pool), marking the store down; None when
        ``exc`` is something else (a bad command, a bug)."""
        leaves = _leaves(exc)
        if any(is_pool_exhausted(e) for e in leaves):
            return self._pool_exhausted_error()
        if not leaves or not all(
            isinstance(e, StoreUnavailable) or is_unavailable_error(e) for e in leaves
        ):
            return None
        for e in leaves:
            if isinstance(e, StoreUnavailable):
                return e
        self._mark_unavailable(leaves[0])
        return self._unavailable_error()

    def as_denied(self, exc: BaseException) -> StoreDenied | None:
        """The ``StoreDenied`` for a command Redis refused by ACL (also inside an exception
        group, or raised by a script), naming the right; None for anything else."""
        for e in _leaves(exc):
            if isinstance(e, NoPermissionError) or str(e).startswith("NOPERM"):
                right = permission_right(e)
                user = self.params.username or "default"
                return StoreDenied(
                    f"Redis refused a command: ACL user {user!r} may not {right}; grant the "
                    "rights listed in deploy/redis/users.acl (user coordinator)",
                    details={"right": right, "username": user, "error": str(e)},
                )
        return None

    def unavailable_error(self) -> StoreUnavailable:
        """What a request gets while Redis is down (with ``retry_after_s``)."""
        return self._unavailable_error()

    # -- runtime config overrides (``settings.runtime.OverrideStore``)

    async def read_overrides(self) -> dict[str, bytes]:
        """Every ``cfnctl config set`` override: key -> JSON value."""
        async with self.guard():
            raw = await self.redis.hgetall(self.keys.config)
        return {
            (k.decode() if isinstance(k, bytes) else str(k)): (
                v if isinstance(v, bytes) else v.encode()
            )
            for k, v in raw.items()
        }

    async def write_override(self, key: str, value: bytes) -> None:
        """Keep one override."""
        async with self.guard():
            await self.redis.hset(self.keys.config, key, value)

    async def drop_overrides(self, key: str | None) -> None:
        """Drop one override, or every one (None)."""
        async with self.guard():
            if key is None:
                await self.redis.delete(self.keys.config)
            else:
                await self.redis.hdel(self.keys.config, key)

    # ------------------------------------------------------------------ health loop

    async def run_health(self, stop: asyncio.Event) -> None:
        """PING every ``health_interval_s``; while down, retry with jittered exponential
        backoff from ``retry_base_s`` to ``retry_max_s``. Returns promptly once ``stop``
        is set, even mid-probe. A failure seen by ``guard`` triggers an immediate probe."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                self._wake.clear()
                probe = asyncio.ensure_future(self._probe_and_record())
                try:
                    await asyncio.wait({probe, stopping}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    await _cancel(probe)
                if not probe.cancelled():
                    probe.result()  # the probe catches Exception: anything else is a bug
                if stop.is_set():
                    break
                delay = self.cfg.health_interval_s if self._available else self.retry_in_s()
                waking = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait(
                        {waking, stopping}, timeout=delay, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    await _cancel(waking)
        finally:
            await _cancel(stopping)

    async def _probe_and_record(self) -> None:
        """One PING (bounded); update availability, latency and the next retry time."""
        started = time.perf_counter()
        try:
            # A PING unanswered within the stall bound means Redis is frozen (SIGSTOP,
            # swapping, a dead network path): requests answer store_unavailable
            # instead of waiting out the command timeout.
            async with asyncio.timeout(self.probe_timeout_s):
                await self._probe_client.ping()
                if isinstance(self._probe_client, RedisCluster):
                    # Nodes can answer PING while the cluster refuses data commands.
                    info = await self._one_node("CLUSTER INFO")
                    state = _text(info.get("cluster_state")) if isinstance(info, dict) else None
                    if state != "ok":
                        raise ClusterDownError(f"cluster_state is {state}")
        except Exception as exc:
            # Any failure to PING (auth, cluster down, LOADING...) means unusable.
            self._failures += 1
            delay = self._backoff(self._failures)
            self._retry_at = time.monotonic() + delay
            self._mark_unavailable(exc, wake=False)
            log.debug(
                "store_probe_failed",
                error=describe_error(exc),
                attempt=self._failures,
                retry_in_s=round(delay, 3),
            )
            return
        self._failures = 0
        self._retry_at = None
        self._mark_available((time.perf_counter() - started) * 1000.0)

    def _backoff(self, failures: int) -> float:
        exponent = min(failures - 1, _MAX_EXPONENT)
        delay = min(self.cfg.retry_max_s, self.cfg.retry_base_s * 2**exponent)
        # Jitter spreads the reconnects of many daemons/agents after an outage.
        return float(delay * random.uniform(0.5, 1.0))

    def _mark_available(self, latency_ms: float) -> None:
        self._latency_ms = round(latency_ms, 3)
        if self._available:
            return
        down_for = time.monotonic() - self._down_since if self._down_since else None
        self._available = True
        self._error = None
        self._down_since = None
        self._up_since = time.monotonic()
        self._down.clear()
        self._up.set()
        log.info(
            "store_available",
            url=self.display_url,
            latency_ms=self._latency_ms,
            down_for_s=round(down_for, 3) if down_for is not None else None,
        )

    def _mark_unavailable(self, exc: BaseException, *, wake: bool = True) -> None:
        """Record a failure; ``wake`` (a failure seen outside the health loop) makes
        the loop re-probe at once instead of at the next interval."""
        self._error = describe_error(exc)
        self._latency_ms = None
        if not self._available:
            return
        self._available = False
        self._down_since = time.monotonic()
        self._up_since = None
        if self._retry_at is None or self._failures == 0:
            self._retry_at = time.monotonic()
        self._up.clear()
        self._down.set()
        if wake:
            # Only on the transition, so a burst of failing requests costs one probe.
            self._wake.set()
        log.warning(
            "store_unavailable",
            url=self.display_url,
            error=self._error,
            retry_in_s=self.retry_in_s(),
        )

    def _current_error(self) -> str | None:
        # "connection refused" hides the real story when our own server crashed.
        server = self.embedded
        if server is not None and server.returncode is not None:
            return (
                f"the embedded redis-server exited with code {server.returncode}; "
                f"see {server.log_path}"
            )
        return self._error

    def _unavailable_error(self) -> StoreUnavailable:
        # Never hint 0 (a probe is running right now): clients would spin.
        retry = max(self.retry_in_s() or 0.0, self.cfg.retry_base_s)
        error = self._current_error()
        return StoreUnavailable(
            f"Redis at {self.display_url} is unavailable: {error}",
            details={
                "retry_after_s": retry,
                "url": self.display_url,
                "mode": self.mode,
                "error": error,
            },
        )

    def _pool_exhausted_error(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"all {self.cfg.pool_size} Redis connections stayed busy for "
            f"{self.cfg.command_timeout_s:g}s (raise redis.pool_size if this persists)",
            details={
                "retry_after_s": self.cfg.retry_base_s,
                "url": self.display_url,
                "reason": "pool_exhausted",
            },
        )

    # ------------------------------------------------------------------ status

    async def status(self) -> StoreStatus:
        """How Redis is reached and how it is doing; reports (never raises) when down."""
        aof_enabled: bool | None = None
        rdb_saves: str | None = None
        unchecked: list[str] = []
        if self._available:
            try:
                async with asyncio.timeout(self.cfg.command_timeout_s):
                    server = await self._info("server")
                    persistence = await self._info("persistence")
                    rdb_saves = await self._rdb_saves()
                if rdb_saves is None:
                    unchecked.append(RDB_UNCHECKED)
                self._version = _text(server.get("redis_version")) or self._version
                aof = persistence.get("aof_enabled")
                aof_enabled = None if aof is None else str(aof) == "1"
            except Exception as exc:
                if is_unavailable_error(exc):
                    self._mark_unavailable(exc)
                elif isinstance(exc, RedisError | RedisClusterException):
                    # e.g. INFO denied by an ACL: report what is known, keep going.
                    log.debug("store_status_partial", error=describe_error(exc))
                    unchecked.append(f"persistence: {describe_error(exc)}")
                else:
                    raise
        return StoreStatus(
            mode=self.mode,
            url=self.display_url,
            available=self._available,
            key_prefix=self.keys.prefix,
            version=self._version,
            latency_ms=self._latency_ms if self._available else None,
            error=None if self._available else self._current_error(),
            retry_in_s=self.retry_in_s(),
            embedded_pid=self.embedded.pid if self.embedded else None,
            aof_enabled=aof_enabled,
            rdb_saves=rdb_saves,
            unchecked=unchecked,
        )

    async def info(self, section: str) -> dict[str, Any]:
        """One INFO section, parsed (one node in cluster mode); raises as Redis does."""
        return await self._info(section)

    async def rdb_saves(self) -> str | None:
        """The ``save`` schedule ("" = RDB off); None when CONFIG is renamed or denied."""
        return await self._rdb_saves()

    async def _info(self, section: str) -> dict[str, Any]:
        reply = await self._one_node("INFO", section)
        return reply if isinstance(reply, dict) else {}

    async def _rdb_saves(self) -> str | None:
        """The ``save`` schedule ("" = RDB off); None when CONFIG is renamed or denied."""
        try:
            reply = await self._one_node("CONFIG GET", "save")
        except RedisError as exc:
            if is_unavailable_error(exc):
                raise
            return None  # CONFIG renamed away or denied by an ACL
        if isinstance(reply, dict):
            for key, value in reply.items():
                if _text(key) == "save":
                    return _text(value)
        return None

    def _one_node(self, *args: str) -> Awaitable[Any]:
        # Server-wide commands go to every node in cluster mode; one node is enough here.
        execute: Callable[..., Awaitable[Any]] = self._probe_client.execute_command
        if isinstance(self._probe_client, RedisCluster):
            return execute(*args, target_nodes=RedisCluster.RANDOM)
        return execute(*args)


# --------------------------------------------------------------------------- helpers

RDB_UNCHECKED = "rdb saves: CONFIG GET refused or renamed (INFO does not show the schedule)"


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it is done; never swallows our own cancellation
    (asyncio.wait propagates it, unlike ``suppress(CancelledError)`` around ``await``).

    The cancel is repeated: on Python 3.11 ``asyncio.wait_for`` (used by redis-py to
    send a command) drops a cancel that lands as the send completes (CPython
    gh-86296). The loop is bounded by the probe's own deadline.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_RECANCEL_S)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
