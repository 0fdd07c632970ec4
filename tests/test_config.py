"""Pure tests of config loading and validation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cfn_client.wire.errors import ConfigError
from cfn_daemon.settings.load import (
    check_runtime_key,
    coerce_value,
    find_config_file,
    flatten_config,
    load_config,
    redact_url,
)
from tests.conftest import DaemonFactory


def test_defaults_match_the_design() -> None:
    cfg = load_config(env={}).config
    assert (cfg.loop.gate_threshold, cfg.loop.gate_mean, cfg.loop.consensus_threshold) == (
        0.75,
        0.80,
        0.90,
    )
    assert (cfg.loop.max_loop2, cfg.loop.max_loop3) == (10, 10)
    assert cfg.daemon.socket_mode == 0o660
    assert cfg.daemon.max_frame_bytes == 1 << 20
    assert cfg.redis.url is None


def test_precedence_file_env_flags_runtime(tmp_path: Path) -> None:
    f = tmp_path / "cfnd.toml"
    f.write_text('[loop]\nmax_loop2 = 3\nmax_loop3 = 4\ngate_mean = 0.5\n[daemon]\nsocket = "/a"\n')
    loaded = load_config(
        file=f,
        env={"CFN_LOOP__MAX_LOOP3": "5", "CFN_SOCKET": "/b", "CFN_LOOP__GATE_MEAN": "0.6"},
        flags={"daemon.socket": "/c"},
        runtime={"loop.gate_mean": 0.7},
    )
    cfg = loaded.config
    assert (cfg.loop.max_loop2, cfg.loop.max_loop3, cfg.loop.gate_mean) == (3, 5, 0.7)
    assert cfg.daemon.socket == "/c"
    assert loaded.sources["loop.max_loop2"] == f"file:{f}"
    assert loaded.sources["loop.max_loop3"] == "env:CFN_LOOP__MAX_LOOP3"
    assert loaded.sources["daemon.socket"] == "flag"
    assert loaded.sources["loop.gate_mean"] == "runtime"


@pytest.mark.parametrize(
    ("toml", "key", "value", "expected"),
    [
        ("[loop]\ngate_threshold = 1.5\n", "loop.gate_threshold", 1.5, "<= 1.0"),
        ("[loop]\nmax_loop2 = 0\n", "loop.max_loop2", 0, ">= 1"),
        ("[loop]\nmax_loop2 = '3'\n", "loop.max_loop2", "3", "Expected `int`, got `str`"),
        ("[loop]\nbogus = 1\n", "loop.bogus", 1, "a known key"),
        ("[swarm]\ntopology = 'cube'\n", "swarm.topology", "cube", "one of hierarchical, mesh"),
        ("[redis]\nurl = 'http://x'\n", "redis.url", "http://x", "redis://"),
        ("[redis]\nkey_prefix = 'a b'\n", "redis.key_prefix", "a b", "regex"),
    ],
)
def test_bad_file_values_name_file_key_value_expected(
    tmp_path: Path, toml: str, key: str, value: object, expected: str
) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(file=f, env={})
    err = info.value
    assert err.details["file"] == str(f)
    assert err.details["key"] == key
    assert err.details["value"] == value
    assert expected in err.details["expected"]
    assert str(f) in err.message and key in err.message and repr(value) in err.message


def test_toml_syntax_error_names_file(tmp_path: Path) -> None:
    f = tmp_path / "broken.toml"
    f.write_text("[loop\n")
    with pytest.raises(ConfigError, match=r"broken.toml: not valid TOML.*line 1"):
        load_config(file=f, env={})


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"CFN_LOOP__MAX_LOOP2": "many"})
    assert info.value.details["source"] == "env:CFN_LOOP__MAX_LOOP2"
    assert info.value.details["value"] == "many"
    with pytest.raises(ConfigError, match=r"unknown config key 'loop\.nope'"):
        load_config(env={"CFN_LOOP__NOPE": "1"})


def test_env_lists_and_octal_modes() -> None:
    cfg = load_config(
        env={"CFN_AUTH__ADMIN_USERS": "alice, bob", "CFN_DAEMON__SOCKET_MODE": "640"}
    ).config
    assert cfg.auth.admin_users == ["alice", "bob"]
    assert cfg.daemon.socket_mode == 0o640


def test_runtime_keys() -> None:
    check_runtime_key("loop.max_loop2")
    check_runtime_key("daemon.log_level")
    with pytest.raises(ConfigError, match="cannot change at runtime"):
        check_runtime_key("redis.url")
    with pytest.raises(ConfigError, match="unknown config key"):
        check_runtime_key("loop.nope")
    assert coerce_value("loop.gate_threshold", "0.8") == 0.8
    with pytest.raises(ConfigError, match=r"<= 1\.0"):
        coerce_value("loop.gate_threshold", "1.8")


def test_find_config_file_order(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "cfn").mkdir(parents=True)
    (xdg / "cfn" / "cfnd.toml").write_text("")
    env = {"XDG_CONFIG_HOME": str(xdg), "HOME": str(tmp_path)}
    assert find_config_file(None, env) == xdg / "cfn" / "cfnd.toml"
    explicit = tmp_path / "x.toml"
    explicit.write_text("")
    assert find_config_file(str(explicit), {**env, "CFN_CONFIG": "/nope"}) == explicit
    with pytest.raises(ConfigError, match="from CFN_CONFIG"):
        find_config_file(None, {**env, "CFN_CONFIG": str(tmp_path / "missing.toml")})


def test_flatten_and_redact() -> None:
    flat = flatten_config(load_config(env={}).config)
    assert flat["loop.max_loop2"] == 10
    assert "auth.admin_users" in flat
    assert redact_url("redis://user:s3cret@127.0.0.1:6379/0") == "redis://user:***@127.0.0.1:6379/0"
    assert redact_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


async def test_a_config_set_during_an_override_reload_is_kept(
    daemon_factory: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cfnd re-reads the overrides whenever Redis (re)appears, e.g. just after start-up. A
    # `config set` answered meanwhile must not be undone by that older snapshot.
    d = await daemon_factory()
    manager, store = d.config_manager, d.store
    read_done, release = asyncio.Event(), asyncio.Event()
    real_read = store.read_overrides

    async def slow_read() -> dict[str, bytes]:
        raw = await real_read()
        read_done.set()
        await release.wait()
        return raw

    monkeypatch.setattr(store, "read_overrides", slow_read)
    reload = asyncio.create_task(manager.load_overrides(store))
    await read_done.wait()  # the reload holds its (still empty) snapshot
    setter = asyncio.create_task(manager.set(store, "loop.gate_threshold", "0.8"))
    await asyncio.sleep(0)  # let the set run up to its Redis write
    release.set()
    await asyncio.gather(reload, setter)
    assert manager.config.loop.gate_threshold == 0.8
    assert [e.source for e in manager.entries("loop.gate_threshold")] == ["runtime"]


def test_every_section_is_settable_from_the_environment() -> None:
    loaded = load_config(
        env={
            "CFN_METRICS__ENABLED": "false",
            "CFN_METRICS__LISTEN": "127.0.0.1:0",
            "CFN_MONITOR__INTERVAL_S": "5",
            "CFN_AUDIT__DENIAL_BURST": "3",
        }
    ).config
    assert (loaded.metrics.enabled, loaded.metrics.listen) == (False, "127.0.0.1:0")
    assert (loaded.monitor.interval_s, loaded.audit.denial_burst) == (5.0, 3)
