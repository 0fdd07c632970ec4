"""How a local agent reaches Redis: a password-free URL and TLS flags for its argv, and
its credentials for its environment: an ACL user of its own, limited to its swarm
(``store.acl.agent_rules``), where cfnd may create one, else cfnd's own."""

from __future__ import annotations

import os

import structlog
from redis.exceptions import ResponseError

from cfn_daemon.store import Store
from cfn_daemon.store.acl import (
    agent_rules,
    agent_username,
    drop_agent_user,
    ensure_agent_user,
)
from cfn_daemon.store.client import describe_error, is_unavailable_error

log = structlog.get_logger("cfn.supervisor")


def agent_redis_url(store: Store, username: str | None = None) -> str:
    """A password-free URL for child agents (the password goes in their env)."""
    if store.embedded is not None and not username:
        return store.embedded.url
    p = store.params
    name = username or p.username
    user = f"{name}@" if name else ""
    if p.unix_socket_path:
        return f"unix://{user}{p.unix_socket_path}?db={p.db}"
    scheme = "rediss" if p.tls else "redis"
    return f"{scheme}://{user}{p.host}:{p.port}/{p.db}"


def agent_tls_args(store: Store) -> list[str]:
    """The TLS files cfnd itself uses, for its child agents (paths only, no secrets)."""
    p = store.params
    if not p.tls:
        return []
    files = (
        ("--tls-ca-file", p.tls_ca_file),
        ("--tls-cert-file", p.tls_cert_file),
        ("--tls-key-file", p.tls_key_file),
    )
    return [arg for flag, path in files if path for arg in (flag, os.path.abspath(path))]


def own_users_possible(store: Store) -> bool:
    """Per-agent users make sense where Redis demands a login (a password is set: the
    embedded server always has one) and one ACL SETUSER reaches the whole of it (not a
    cluster: that is one per node)."""
    return store.mode == "embedded" or (store.mode == "external" and bool(store.params.password))


async def agent_login(store: Store, swarm: str, agent_id: str) -> tuple[str, dict[str, str]]:
    """The URL and environment a new local agent connects with."""
    if own_users_possible(store):
        try:
            user, password = await ensure_agent_user(store.redis, store.keys, swarm, agent_id)
        except ResponseError as exc:  # ACL SETUSER refused: renamed, denied, old Redis
            log.warning(
                "agent_acl_user_unavailable",
                swarm=swarm,
                agent=agent_id,
                error=describe_error(exc),
                hint="the agent uses cfnd's own Redis user",
            )
        else:
            if store.embedded is not None:  # so it can log in after a server restart
                store.embedded.agent_users.add(user, password, agent_rules(store.keys, swarm))
            return agent_redis_url(store, user), {"CFN_REDIS_PASSWORD": password}
    env = {"CFN_REDIS_PASSWORD": store.params.password} if store.params.password else {}
    return agent_redis_url(store), env


async def agent_logout(store: Store, agent_id: str) -> None:
    """Delete a gone agent's own ACL user (best effort: Redis may be down)."""
    if not own_users_possible(store):
        return
    if store.embedded is not None:
        store.embedded.agent_users.remove(agent_username(store.keys, agent_id))
    try:
        await drop_agent_user(store.redis, store.keys, agent_id)
    except Exception as exc:
        if not (is_unavailable_error(exc) or isinstance(exc, ResponseError)):
            raise
        log.warning("agent_acl_user_not_dropped", agent=agent_id, error=describe_error(exc))
