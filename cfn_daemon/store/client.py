"""redis-py specifics: build asyncio clients from ``ConnectionParams`` (no I/O: clients
connect lazily) and classify their errors (outage vs. usage error vs. busy pool)."""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    BlockingConnectionPool,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import (
    ClusterDownError,
    MaxConnectionsError,
    RedisClusterException,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cfn_client.wire.errors import StoreUnavailable
from cfn_daemon.settings.schema import RedisConfig
from cfn_daemon.store.urls import ConnectionParams

Client: TypeAlias = "Redis | RedisCluster"

# redis-py retries a command this many times on a transient connection error before
# the error reaches Store.guard (which then reports the store unavailable).
COMMAND_RETRIES = 2

# Errors meaning "Redis cannot be reached", as opposed to a bad command or a full pool.
# (OSError covers the builtin TimeoutError raised by asyncio.timeout as well.)
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    ClusterDownError,
    SlotNotCoveredError,
)


def build_client(
    params: ConnectionParams, cfg: RedisConfig, *, pool_size: int, retries: int = COMMAND_RETRIES
) -> Client:
    """A ``Redis`` (blocking pool of ``pool_size``) or ``RedisCluster`` for ``params``.

    Responses are bytes (``decode_responses=False``): callers decode what they need.
    """
    retry = (
        Retry(ExponentialWithJitterBackoff(cap=cfg.retry_max_s, base=cfg.retry_base_s), retries)
        if retries
        else Retry(NoBackoff(), 0)
    )
    common: dict[str, Any] = {
        "username": params.username,
        "password": params.password,
        "socket_timeout": cfg.command_timeout_s,
        "socket_connect_timeout": cfg.connect_timeout_s,
        "health_check_interval": cfg.health_interval_s,
        "retry": retry,
        "decode_responses": False,
    }
    tls: dict[str, Any] = (
        {
            "ssl_ca_certs": params.tls_ca_file,
            "ssl_certfile": params.tls_cert_file,
            "ssl_keyfile": params.tls_key_file,
            "ssl_cert_reqs": "required",
        }
        if params.tls
        else {}
    )
    if params.mode == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in params.cluster_nodes],
            max_connections=pool_size,
            ssl=params.tls,
            **common,
            **tls,
        )
    connection_class: type[AbstractConnection]
    if params.unix_socket_path is not None:
        connection_class = UnixDomainSocketConnection
        address: dict[str, Any] = {"path": params.unix_socket_path}
    else:
        connection_class = SSLConnection if params.tls else Connection
        address = {"host": params.host, "port": params.port, **tls}
    # A blocking pool makes a burst of requests queue for a connection (up to the
    # command timeout) instead of failing at once with "Too many connections".
    pool = BlockingConnectionPool(
        max_connections=pool_size,
        timeout=cfg.command_timeout_s,
        connection_class=connection_class,
        db=params.db,
        **address,
        **common,
    )
    return Redis.from_pool(pool)


def is_unavailable_error(exc: BaseException) -> bool:
    """True if ``exc`` means Redis cannot be reached or used right now (as opposed to a
    bad command, a wrong type or a busy connection pool)."""
    if is_pool_exhausted(exc):
        return False
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return True
    if isinstance(exc, RedisClusterException):
        # "Redis Cluster cannot be connected" wraps the connection error; "All slots
        # are not covered" means a node is missing. Others are usage errors.
        return isinstance(exc.__cause__, UNAVAILABLE_ERRORS) or str(exc).startswith(
            "All slots are not covered"
        )
    return False


def is_outage(exc: BaseException) -> bool:
    """True if ``exc`` (or every error of an exception group) is a store outage: what a
    background loop waits out instead of counting as a crash."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_outage(e) for e in exc.exceptions)
    return isinstance(exc, StoreUnavailable) or is_unavailable_error(exc)


def is_pool_exhausted(exc: BaseException) -> bool:
    """True if no pooled connection became free in time (Redis itself may be fine)."""
    # BlockingConnectionPool raises ConnectionError("No connection available.") from
    # an asyncio timeout, the cluster's pools MaxConnectionsError: the pool is busy,
    # Redis itself may be fine.
    if isinstance(exc, MaxConnectionsError):
        return True
    return (
        type(exc) is RedisConnectionError
        and isinstance(exc.__cause__, TimeoutError)
        and "No connection available" in str(exc)
    )


def describe_error(exc: BaseException) -> str:
    """``Type: message`` for logs and status (some errors have an empty message)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
