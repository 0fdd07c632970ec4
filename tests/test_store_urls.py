"""Pure tests of cfn_daemon.store.urls: URL forms, credentials, TLS files, redaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfn_client.wire.errors import ConfigError
from cfn_daemon.settings.load import load_config
from cfn_daemon.settings.schema import RedisConfig
from cfn_daemon.store.urls import (
    check_embedded_config,
    display_url,
    embedded_params,
    read_password_file,
    redacted,
    resolve,
    uses_embedded,
)

NO_ENV: dict[str, str] = {}


def cfg(**kwargs: Any) -> RedisConfig:
    return RedisConfig(**kwargs)


# --------------------------------------------------------------------------- URL forms


def test_redis_url_host_port_db() -> None:
    p = resolve(cfg(url="redis://10.0.0.5:6380/3"), NO_ENV)
    assert (p.mode, p.host, p.port, p.db) == ("external", "10.0.0.5", 6380, 3)
    assert p.unix_socket_path is None
    assert not p.tls
    assert p.password is None
    assert p.password_source is None


def test_redis_url_defaults() -> None:
    p = resolve(cfg(url="redis://"), NO_ENV)
    assert (p.host, p.port, p.db) == ("localhost", 6379, 0)
    p = resolve(cfg(url="redis://cache.internal"), NO_ENV)
    assert (p.host, p.port, p.db) == ("cache.internal", 6379, 0)


def test_ipv6_host() -> None:
    p = resolve(cfg(url="redis://[::1]:7000/1"), NO_ENV)
    assert (p.host, p.port, p.db) == ("::1", 7000, 1)


def test_db_from_query() -> None:
    assert resolve(cfg(url="redis://h:1?db=5"), NO_ENV).db == 5
    assert resolve(cfg(url="redis://h:1/5?db=5"), NO_ENV).db == 5
    with pytest.raises(ConfigError, match="given twice"):
        resolve(cfg(url="redis://h:1/4?db=5"), NO_ENV)


def test_unix_url() -> None:
    p = resolve(cfg(url="unix:///run/redis/redis.sock?db=2"), NO_ENV)
    assert (p.mode, p.unix_socket_path, p.db, p.host) == (
        "external",
        "/run/redis/redis.sock",
        2,
        None,
    )
    assert p.display_url == "unix:///run/redis/redis.sock?db=2"


def test_unix_url_with_credentials() -> None:
    p = resolve(cfg(url="unix://cfn:s3cret@/run/redis.sock"), NO_ENV)
    assert (p.username, p.password, p.password_source) == ("cfn", "s3cret", "url")
    assert "s3cret" not in p.display_url
    p = resolve(cfg(url="unix:///run/redis.sock?password=q%40w"), NO_ENV)
    assert p.password == "q@w"


@pytest.mark.parametrize(
    "url", ["unix://relative/redis.sock", "unix://", "unix:///", "unix://host/run/r.sock"]
)
def test_unix_url_needs_absolute_path(url: str) -> None:
    with pytest.raises(ConfigError, match="absolute"):
        resolve(cfg(url=url), NO_ENV)


def test_rediss_url_with_tls_files(tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for f in files.values():
        f.write_text("x")
    p = resolve(
        cfg(
            url="rediss://redis.example:6390/0",
            tls_ca_file=str(files["ca"]),
            tls_cert_file=str(files["cert"]),
            tls_key_file=str(files["key"]),
        ),
        NO_ENV,
    )
    assert p.tls
    assert (p.host, p.port) == ("redis.example", 6390)
    assert (p.tls_ca_file, p.tls_cert_file, p.tls_key_file) == tuple(
        str(files[n]) for n in ("ca", "cert", "key")
    )


def test_rediss_without_files_uses_system_cas() -> None:
    p = resolve(cfg(url="rediss://redis.example"), NO_ENV)
    assert p.tls
    assert p.tls_ca_file is None


def test_tls_files_need_rediss(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ConfigError, match=r"redis\.tls_ca_file.*rediss://"):
        resolve(cfg(url="redis://h:1", tls_ca_file=str(ca)), NO_ENV)


def test_tls_key_needs_cert(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("x")
    with pytest.raises(ConfigError, match="tls_cert_file"):
        resolve(cfg(url="rediss://h:1", tls_key_file=str(key)), NO_ENV)


def test_missing_tls_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=str(missing)) as info:
        resolve(cfg(url="rediss://h:1", tls_ca_file=str(missing)), NO_ENV)
    assert info.value.details["key"] == "redis.tls_ca_file"


def test_cluster_url() -> None:
    p = resolve(cfg(url="redis+cluster://u:pw@10.0.0.1:7000,10.0.0.2:7001"), NO_ENV)
    assert p.mode == "cluster"
    assert p.cluster_nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert (p.username, p.password) == ("u", "pw")
    assert p.host is None
    assert p.display_url == "redis+cluster://u:***@10.0.0.1:7000,10.0.0.2:7001"


def test_cluster_nodes_list() -> None:
    p = resolve(cfg(cluster_nodes=["redis://:pw@h1:7000", "redis://:pw@h2:7001"]), NO_ENV)
    assert p.mode == "cluster"
    assert p.cluster_nodes == (("h1", 7000), ("h2", 7001))
    assert p.password == "pw"
    assert not p.tls
    assert p.display_url == "redis://:***@h1:7000,redis://:***@h2:7001"


def test_cluster_nodes_tls() -> None:
    p = resolve(cfg(cluster_nodes=["rediss://h1:7000", "rediss://h2:7000"]), NO_ENV)
    assert p.tls
    assert p.mode == "cluster"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cluster_nodes": ["redis://h1:1", "rediss://h2:2"]}, "mix"),
        ({"cluster_nodes": ["redis://:a@h1:1", "redis://:b@h2:2"]}, "credentials"),
        ({"cluster_nodes": ["redis://h1:1/2"]}, "database 0"),
        ({"url": "redis+cluster://h1:1/1"}, "database 0"),
        ({"url": "redis+cluster://"}, "at least one"),
        ({"url": "redis://h1:1", "cluster_nodes": ["redis://h2:2"]}, "not both"),
        ({"url": "redis://h1:1,h2:2"}, "redis\\+cluster"),
        ({"url": "redis://h:99999"}, "port"),
        ({"url": "redis://h:0"}, "port"),
        ({"url": "redis://h:abc"}, "port"),
        ({"url": "redis://h/x"}, "number"),
        ({"url": "redis://h?ssl=true"}, "unknown query option"),
        ({"url": "redis://h#frag"}, "fragment"),
    ],
)
def test_invalid_urls(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve(cfg(**kwargs), NO_ENV)


def test_url_errors_never_echo_the_url() -> None:
    # A malformed URL may not redact cleanly, so errors name the key, not the value.
    with pytest.raises(ConfigError) as info:
        resolve(cfg(url="redis://user:pa/ss@h:1"), NO_ENV)
    assert "pa/ss" not in str(info.value)
    assert info.value.details == {"key": "redis.url"}


def test_cluster_url_from_env_via_load_config() -> None:
    loaded = load_config(env={"CFN_REDIS_URL": "redis+cluster://127.0.0.1:7000"})
    assert resolve(loaded.config.redis, NO_ENV).mode == "cluster"


# --------------------------------------------------------------------------- credentials


def test_password_precedence_env_over_file_over_url(tmp_path: Path) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text("from-file\n")
    url = "redis://:from-url@h:1"
    env = {"CFN_REDIS_PASSWORD": "from-env"}
    p = resolve(cfg(url=url, password_file=str(pw_file)), env)
    assert (p.password, p.password_source) == ("from-env", "env")
    p = resolve(cfg(url=url, password_file=str(pw_file)), NO_ENV)
    assert (p.password, p.password_source) == ("from-file", "file")
    p = resolve(cfg(url=url), NO_ENV)
    assert (p.password, p.password_source) == ("from-url", "url")
    # An empty env variable does not count as set.
    p = resolve(cfg(url=url), {"CFN_REDIS_PASSWORD": ""})
    assert p.password_source == "url"


def test_env_password_wins_without_reading_the_file(tmp_path: Path) -> None:
    p = resolve(
        cfg(url="redis://h:1", password_file=str(tmp_path / "missing")),
        {"CFN_REDIS_PASSWORD": "x"},
    )
    assert p.password == "x"


@pytest.mark.parametrize(
    ("content", "expected"),
    [("pw\n", "pw"), ("pw\r\n", "pw"), ("pw", "pw"), ("p w \n\n", "p w "), ("é\n", "é")],
)
def test_password_file_strips_trailing_newlines(
    tmp_path: Path, content: str, expected: str
) -> None:
    f = tmp_path / "pw"
    f.write_text(content, encoding="utf-8")
    assert read_password_file(str(f)) == expected


def test_unreadable_password_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file"
    with pytest.raises(ConfigError, match=str(missing)) as info:
        resolve(cfg(url="redis://h:1", password_file=str(missing)), NO_ENV)
    assert info.value.details["file"] == str(missing)
    assert info.value.details["key"] == "redis.password_file"
    with pytest.raises(ConfigError, match=str(tmp_path)):
        read_password_file(str(tmp_path))  # a directory


def test_empty_password_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_password_file(str(f))


def test_username_from_config_or_url() -> None:
    assert resolve(cfg(url="redis://alice:pw@h:1"), NO_ENV).username == "alice"
    assert resolve(cfg(url="redis://alice:pw@h:1", username="bob"), NO_ENV).username == "bob"
    assert resolve(cfg(url="redis://h:1", username="bob"), NO_ENV).username == "bob"
    assert resolve(cfg(url="redis://:pw@h:1"), NO_ENV).username is None


def test_percent_encoded_credentials() -> None:
    p = resolve(cfg(url="redis://al%40ce:p%3Aw%2Fd%40x@h:1"), NO_ENV)
    assert (p.username, p.password) == ("al@ce", "p:w/d@x")
    assert "p%3A" not in p.display_url


def test_repr_hides_password() -> None:
    p = resolve(cfg(url="redis://:hunter2@h:1"), NO_ENV)
    assert "hunter2" not in repr(p)


# --------------------------------------------------------------------------- display


def test_display_url_forms(tmp_path: Path) -> None:
    assert display_url(cfg(url="redis://u:secret@h:1/0")) == "redis://u:***@h:1/0"
    assert display_url(cfg(url="redis://h:1")) == "redis://h:1"
    assert display_url(cfg()) == "embedded"
    sock = tmp_path / "r.sock"
    assert display_url(cfg(), sock) == f"unix://{sock}"


def test_redacted_handles_unescaped_at_sign() -> None:
    assert redacted("redis://u:p@ss@h:1/0") == "redis://u:***@h:1/0"


@given(st.text(min_size=1, max_size=40))
def test_display_never_shows_the_password(password: str) -> None:
    url = f"redis://:{quote(password, safe='')}@127.0.0.1:6379/0"
    p = resolve(cfg(url=url), NO_ENV)
    assert p.password == password
    assert p.display_url == "redis://:***@127.0.0.1:6379/0"


# --------------------------------------------------------------------------- embedded


def test_embedded_selection() -> None:
    assert uses_embedded(cfg())
    assert not uses_embedded(cfg(url="redis://h:1"))
    assert not uses_embedded(cfg(cluster_nodes=["redis://h:1"]))
    with pytest.raises(ValueError, match=r"embedded|url"):
        resolve(cfg(), NO_ENV)


def test_embedded_params(tmp_path: Path) -> None:
    p = embedded_params(tmp_path / "redis.sock")
    assert p.mode == "embedded"
    assert p.unix_socket_path == str(tmp_path / "redis.sock")
    assert p.password is None
    assert p.display_url == f"unix://{tmp_path / 'redis.sock'}"


def test_embedded_rejects_external_only_settings() -> None:
    check_embedded_config(cfg())
    with pytest.raises(ConfigError, match=r"redis\.password_file.*redis\.url"):
        check_embedded_config(cfg(password_file="/etc/cfn/redis.pw"))
    with pytest.raises(ConfigError, match=r"redis\.username"):
        check_embedded_config(cfg(username="cfn"))
