"""Turn a ``RedisConfig`` and the environment into connection parameters (no network I/O).

Accepted forms (``[redis]`` section or ``CFN_REDIS_URL``)::

    redis://[user[:password]@]host[:port][/db]
    rediss://...                        TLS; tls_ca_file / tls_cert_file / tls_key_file
    unix://[user[:password]@]/path/to/redis.sock[?db=N]
    redis+cluster://[user[:password]@]h1:p1,h2:p2
    cluster_nodes = ["redis://h1:p1", "rediss://h2:p2"]   (cluster mode, TLS if rediss)

No ``url`` and no ``cluster_nodes`` means the embedded server (see ``embedded.py``).

The password comes from, in order: ``CFN_REDIS_PASSWORD``, ``password_file`` (trailing
newlines stripped), the URL. The only I/O here is reading ``password_file`` and checking
that the configured TLS files are readable, so mistakes surface as ``ConfigError`` at
start-up instead of as an endless "store unavailable".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from cfn_client.wire.errors import ConfigError
from cfn_daemon.settings.load import redact_url
from cfn_daemon.settings.schema import RedisConfig

Mode = Literal["embedded", "external", "cluster"]
PasswordSource = Literal["env", "file", "url"]

PASSWORD_ENV = "CFN_REDIS_PASSWORD"
DEFAULT_PORT = 6379
CLUSTER_SCHEME = "redis+cluster"
_QUERY_KEYS = frozenset({"db", "password", "username"})
# Builds the ConfigError for one URL (it knows which config key the URL came from).
_Bad = Callable[[str], ConfigError]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionParams:
    """Everything needed to build a redis-py client; ``repr`` never shows the password."""

    mode: Mode
    display_url: str
    host: str | None = None
    port: int | None = None
    unix_socket_path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_source: PasswordSource | None = None
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    cluster_nodes: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """One parsed URL before credentials are merged with the config."""

    scheme: str
    hosts: tuple[tuple[str, int], ...] = ()
    unix_socket_path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def uses_embedded(cfg: RedisConfig) -> bool:
    """True when no Redis is configured, so cfnd runs its own ``redis-server``."""
    return cfg.url is None and not cfg.cluster_nodes


def display_url(cfg: RedisConfig, embedded_socket: Path | None = None) -> str:
    """The configured Redis location for logs and status, with any password hidden."""
    if cfg.url is not None:
        return redacted(cfg.url)
    if cfg.cluster_nodes:
        return ",".join(redacted(node) for node in cfg.cluster_nodes)
    return f"unix://{embedded_socket}" if embedded_socket else "embedded"


def redacted(url: str) -> str:
    """``redact_url`` plus a guard for URLs it cannot fully mask (an unescaped ``@``)."""
    shown = redact_url(url)
    scheme, sep, rest = shown.partition("://")
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    return f"{scheme}{sep}{netloc}{tail}"


def embedded_params(socket_path: Path, password: str | None = None) -> ConnectionParams:
    """Parameters for the private server: a Unix socket in a 0700 dir, and its password
    (kept in the state dir, see ``embedded.py``)."""
    return ConnectionParams(
        mode="embedded",
        display_url=f"unix://{socket_path}",
        unix_socket_path=str(socket_path),
        password=password or None,
        password_source="file" if password else None,
    )


def resolve(cfg: RedisConfig, env: Mapping[str, str]) -> ConnectionParams:
    """Connection parameters of an external or cluster Redis; raises ``ConfigError``.

    Call only when ``uses_embedded(cfg)`` is false; for the embedded server use
    ``check_embedded_config`` and ``embedded_params``.
    """
    if uses_embedded(cfg):
        raise ValueError("resolve() needs redis.url or redis.cluster_nodes")
    if cfg.url is not None and cfg.cluster_nodes:
        raise ConfigError(
            "set either redis.url or redis.cluster_nodes, not both",
            details={"key": "redis.cluster_nodes"},
        )
    if cfg.url is not None:
        endpoint = _parse_url(cfg.url, "redis.url")
    else:
        endpoint = _merge_nodes(
            [_parse_url(n, f"redis.cluster_nodes[{i}]") for i, n in enumerate(cfg.cluster_nodes)]
        )
    cluster = endpoint.scheme == CLUSTER_SCHEME or bool(cfg.cluster_nodes)
    tls = endpoint.scheme == "rediss"
    _check_tls(cfg, tls)
    if cluster and endpoint.db != 0:
        raise ConfigError(
            "Redis Cluster has only database 0; remove the /db part of the URL",
            details={"key": "redis.url", "value": endpoint.db},
        )
    password, source = _password(cfg, env, endpoint.password)
    host, port = endpoint.hosts[0] if endpoint.hosts and not cluster else (None, None)
    return ConnectionParams(
        mode="cluster" if cluster else "external",
        display_url=display_url(cfg),
        host=host,
        port=port,
        unix_socket_path=endpoint.unix_socket_path,
        db=endpoint.db,
        username=cfg.username or endpoint.username,
        password=password,
        password_source=source,
        tls=tls,
        tls_ca_file=cfg.tls_ca_file,
        tls_cert_file=cfg.tls_cert_file,
        tls_key_file=cfg.tls_key_file,
        cluster_nodes=endpoint.hosts if cluster else (),
    )


def check_embedded_config(cfg: RedisConfig) -> None:
    """Reject settings that would be silently ignored by the embedded server."""
    ignored = [
        f"redis.{name}"
        for name in ("username", "password_file", "tls_ca_file", "tls_cert_file", "tls_key_file")
        if getattr(cfg, name) is not None
    ]
    if ignored:
        raise ConfigError(
            f"{', '.join(ignored)} only apply to an external Redis, but no redis.url is set "
            "(cfnd would use its embedded server); set redis.url or remove them",
            details={"key": ignored[0], "keys": ignored},
        )


def read_password_file(path: str) -> str:
    """The password in ``path`` without trailing newlines; ``ConfigError`` naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"cannot read redis.password_file {path}: {reason}",
            details={"key": "redis.password_file", "file": path, "reason": reason},
        ) from None
    password = text.rstrip("\r\n")
    if not password:
        raise ConfigError(
            f"redis.password_file {path} is empty",
            details={"key": "redis.password_file", "file": path},
        )
    return password


# --------------------------------------------------------------------------- internals


def _password(
    cfg: RedisConfig, env: Mapping[str, str], from_url: str | None
) -> tuple[str | None, PasswordSource | None]:
    # The file is read only when the env variable does not win, so a stale
    # password_file does not break a deployment that overrides it.
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV], "env"
    if cfg.password_file is not None:
        return read_password_file(cfg.password_file), "file"
    if from_url:
        return from_url, "url"
    return None, None


def _check_tls(cfg: RedisConfig, tls: bool) -> None:
    files = {
        "redis.tls_ca_file": cfg.tls_ca_file,
        "redis.tls_cert_file": cfg.tls_cert_file,
        "redis.tls_key_file": cfg.tls_key_file,
    }
    given = [key for key, value in files.items() if value is not None]
    if given and not tls:
        raise ConfigError(
            f"{', '.join(given)} set but the Redis URL does not use TLS; use rediss:// "
            "(or rediss:// entries in redis.cluster_nodes)",
            details={"key": given[0]},
        )
    if cfg.tls_key_file is not None and cfg.tls_cert_file is None:
        raise ConfigError(
            "redis.tls_key_file needs redis.tls_cert_file (the client certificate)",
            details={"key": "redis.tls_cert_file"},
        )
    for key, value in files.items():
        if value is not None and not (os.path.isfile(value) and os.access(value, os.R_OK)):
            raise ConfigError(
                f"{key} {value} does not exist or is not readable",
                details={"key": key, "file": value},
            )


def _parse_url(url: str, key: str) -> _Endpoint:
    # Error messages never quote the URL: a malformed one may not redact cleanly.
    def bad(reason: str) -> ConfigError:
        return ConfigError(f"{key} is not a valid Redis URL: {reason}", details={"key": key})

    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise bad(str(exc)) from None
    scheme = parts.scheme.lower()
    if parts.fragment:
        raise bad("a URL fragment (#...) is not allowed")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - _QUERY_KEYS)
    if unknown:
        raise bad(f"unknown query option(s) {', '.join(unknown)}; known: db, password, username")
    q = {k: unquote(v[-1]) for k, v in query.items()}
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    username, password = None, None
    if at:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    username = q.get("username") or username
    password = q.get("password") or password
    db = _db(parts.path, q.get("db"), scheme, bad)

    if scheme == "unix":
        if hostlist or not parts.path.startswith("/") or parts.path == "/":
            raise bad("expected unix:///absolute/path/to/redis.sock")
        return _Endpoint(
            scheme,
            unix_socket_path=unquote(parts.path),
            db=db,
            username=username,
            password=password,
        )
    if scheme not in ("redis", "rediss", CLUSTER_SCHEME):
        raise bad("expected redis://, rediss://, unix:// or redis+cluster://")
    hosts = tuple(_host_port(h, bad) for h in hostlist.split(",")) if hostlist else ()
    if not hosts:
        if scheme == CLUSTER_SCHEME:
            raise bad("redis+cluster:// needs at least one host:port")
        hosts = (("localhost", DEFAULT_PORT),)
    if len(hosts) > 1 and scheme != CLUSTER_SCHEME:
        raise bad("several hosts are only allowed with redis+cluster://")
    return _Endpoint(scheme, hosts=hosts, db=db, username=username, password=password)


def _host_port(text: str, bad: _Bad) -> tuple[str, int]:
    try:
        parts = urlsplit(f"//{text.strip()}")
        port = parts.port
    except ValueError:
        raise bad("invalid host or port (ports are 1-65535)") from None
    if not parts.hostname:
        raise bad("missing host name")
    if port == 0:
        raise bad("invalid port (ports are 1-65535)")
    return parts.hostname, port or DEFAULT_PORT


def _db(path: str, from_query: str | None, scheme: str, bad: _Bad) -> int:
    from_path = path.strip("/") if scheme != "unix" else ""
    if from_path and from_query is not None and from_path != from_query:
        raise bad("the database is given twice (path and ?db=) with different values")
    text = from_query if from_query is not None else from_path
    if not text:
        return 0
    if not text.isdigit():
        raise bad("the database must be a number >= 0 (redis://host:port/0)")
    return int(text)


def _merge_nodes(nodes: list[_Endpoint]) -> _Endpoint:
    schemes = {n.scheme for n in nodes}
    if len(schemes) > 1:
        raise ConfigError(
            "redis.cluster_nodes mix redis:// and rediss://; use one scheme for every node",
            details={"key": "redis.cluster_nodes"},
        )
    creds = {(n.username, n.password) for n in nodes if n.username or n.password}
    if len(creds) > 1:
        raise ConfigError(
            "redis.cluster_nodes carry different credentials; a cluster has one set",
            details={"key": "redis.cluster_nodes"},
        )
    username, password = creds.pop() if creds else (None, None)
    return _Endpoint(
        schemes.pop(),
        hosts=tuple(h for n in nodes for h in n.hosts),
        db=max(n.db for n in nodes),
        username=username,
        password=password,
    )
