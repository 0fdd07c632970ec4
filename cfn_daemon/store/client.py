"""redis-py specifics: build asyncio clients from ``ConnectionParams`` (no I/O: clients
connect lazily) and classify their errors (outage vs. usage error vs. busy pool)."""

from __future__ import annotations

import ssl
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
    AuthenticationError,
    ClusterDownError,
    MaxConnectionsError,
    NoPermissionError,
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
    params: ConnectionParams,
    cfg: RedisConfig,
    *,
    pool_size: int,
    retries: int = COMMAND_RETRIES,
    health_check: bool = True,
) -> Client:
    """A ``Redis`` (blocking pool of ``pool_size``) or ``RedisCluster`` for ``params``.

    Responses are bytes (``decode_responses=False``): callers decode what they need.
    ``health_check=False``: no PING before a command on a connection idle for
    ``health_interval_s`` (an agent blocks on its work stream for a second at a time,
    so it would PING every second; a dead connection is retried anyway).
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
        "health_check_interval": cfg.health_interval_s if health_check else 0,
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
    """``Type: message`` for logs and status (some errors have an empty message); a
    wrong password, a refused ACL right or a failed TLS verification get a sentence
    saying which setting to fix first."""
    text = str(exc)
    plain = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    hint = explain_error(exc)
    return f"{hint} ({plain})" if hint else plain


def explain_error(exc: BaseException) -> str | None:
    """What the user must fix for a Redis error that retrying cannot cure, else None."""
    if isinstance(exc, AuthenticationError) or "WRONGPASS" in str(exc):
        return (
            "Redis refused the credentials (wrong password or ACL user); check "
            "CFN_REDIS_PASSWORD / redis.password_file and redis.username"
        )
    if isinstance(exc, NoPermissionError):
        return f"Redis ACL user may not {permission_right(exc)}, which cfn needs"
    if is_tls_verify_error(exc):
        return (
            "TLS certificate verification of the Redis server failed: redis.tls_ca_file "
            "(cfn-agent --tls-ca-file) must name the CA that signed the server's "
            "certificate, issued for the host in the URL"
        )
    return None


def is_tls_verify_error(exc: BaseException) -> bool:
    """True if ``exc`` is (or wraps) a failed verification of the server's certificate."""
    seen: BaseException | None = exc
    for _ in range(5):  # bounded walk down the cause/context chain
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_credentials_error(exc: BaseException) -> bool:
    """A wrong password / user or an unverifiable server: waiting does not fix these."""
    return isinstance(exc, AuthenticationError) or is_tls_verify_error(exc)


def permission_right(exc: BaseException) -> str:
    """What a ``NoPermissionError`` says was refused: "run the 'flushall' command",
    "access a key", ...; else its whole message."""
    text = str(exc).rstrip(". ")
    _, run, command = text.partition("to run the ")
    if run:
        return f"run the {command}"
    _, access, what = text.partition("to access a")
    if access:
        return f"access a{what}"
    return text


def set_command_timeout(client: Client, timeout_s: float) -> None:
    """Apply a new command timeout (``redis.command_timeout_s``) to a live client: the
    connections it will open and the ones it holds (``config set redis.timeout``)."""
    if isinstance(client, RedisCluster):
        for node in client.get_nodes():
            node.connection_kwargs["socket_timeout"] = timeout_s
            for node_conn in [*node._connections, *node._free]:
                node_conn.socket_timeout = timeout_s
        return
    pool = client.connection_pool
    pool.connection_kwargs["socket_timeout"] = timeout_s
    if isinstance(pool, BlockingConnectionPool):
        pool.timeout = timeout_s  # how long a request queues for a free connection
    held = [*pool._available_connections, *pool._in_use_connections]
    for conn in held:
        conn.socket_timeout = timeout_s
