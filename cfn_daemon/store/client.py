"""Build redis-py asyncio clients from ``ConnectionParams`` (no I/O: clients connect lazily)."""

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

from cfn_daemon.config import RedisConfig
from cfn_daemon.store.urls import ConnectionParams

Client: TypeAlias = "Redis | RedisCluster"

# redis-py retries a command this many times on a transient connection error before
# the error reaches Store.guard (which then reports the store unavailable).
COMMAND_RETRIES = 2


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
