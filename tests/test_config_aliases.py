"""The guide's config keys (``swarm.maxAgents``, ``redis.timeout`` in ms) as aliases, with
unit conversion, in `config set` / `config show KEY`, TOML and env; "did you mean" for
unknown keys; and each accepted key has an effect (issue 11, part 3)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cfn_client.wire.errors import ConfigError
from cfn_daemon.settings import aliases
from cfn_daemon.settings.load import load_config
from tests.cli_support import run
from tests.conftest import SHARED_REDIS, DaemonFactory
from tests.daemon_proc import CfndProcess

CfndFactory = Callable[..., CfndProcess]


# --------------------------------------------------------------------------- pure


def test_aliases_convert_units_and_point_to_real_keys() -> None:
    from cfn_daemon.settings.load import all_keys

    for name, alias in aliases.ALIASES.items():
        assert alias.key in all_keys(), name  # every alias names a key cfn has
    assert aliases.convert("redis.timeout", "5000") == ("redis.command_timeout_s", 5.0)
    assert aliases.convert("REDIS.TIMEOUT", 250) == ("redis.command_timeout_s", 0.25)
    assert aliases.convert("swarm.maxAgents", "20") == ("swarm.max_agents", "20")
    assert aliases.convert("loop.max_loop2", "3") == ("loop.max_loop2", "3")
    with pytest.raises(ConfigError, match=r"redis.timeout = 'soon' is invalid: expected a number"):
        aliases.convert("redis.timeout", "soon")
    with pytest.raises(ConfigError, match=r"agent.maxMemory has no cfn equivalent: cfn does not"):
        aliases.convert("agent.maxMemory", "1gb")


def test_toml_and_env_take_the_guide_spellings() -> None:
    text = '[swarm]\nmaxAgents = 20\n[redis]\ntimeout = 5000\n[logging]\nlevel = "debug"\n'
    env = {"CFN_REDIS__CONNECTTIMEOUT": "2500"}
    loaded = load_config(file_text=text, env=env)
    cfg = loaded.config
    assert (cfg.swarm.max_agents, cfg.redis.command_timeout_s) == (20, 5.0)
    assert (cfg.daemon.log_level, cfg.redis.connect_timeout_s) == ("debug", 2.5)
    assert loaded.sources["redis.connect_timeout_s"] == "env:CFN_REDIS__CONNECTTIMEOUT"
    with pytest.raises(ConfigError, match=r"swarm.maxAgents and swarm.max_agents are the same"):
        load_config(file_text="[swarm]\nmaxAgents = 20\nmax_agents = 9\n", env={})


def test_unknown_keys_get_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=r"did you mean swarm.maxAgents, swarm.max_agents\?"):
        load_config(env={}, runtime={"swarm.maxAgent": 3})
    with pytest.raises(ConfigError, match=r"did you mean .*loop.gate_threshold"):
        load_config(file_text="[loop]\ngate_treshold = 0.8\n", env={})
    with pytest.raises(ConfigError, match=r"CFN_LOOP__MAX_LOOP4 .*did you mean loop.max_loop"):
        load_config(env={"CFN_LOOP__MAX_LOOP4": "3"})


# --------------------------------------------------------------------------- real cfnd


def test_config_set_alias_has_its_effect(cfnd_factory: CfndFactory) -> None:
    """`config set swarm.maxAgents 20`: the next `swarm init` without MAX_AGENTS has 20."""
    sock = cfnd_factory("--redis-url", SHARED_REDIS).socket
    code, out, err = run(sock, "config", "set", "swarm.maxAgents", "20")
    assert code == 0, err
    assert "swarm.max_agents" in out
    code, out, err = run(sock, "--json", "config", "show", "swarm.maxAgents")
    (entry,) = json.loads(out)["entries"]
    assert (code, entry["key"], entry["value"], entry["source"]) == (
        0, "swarm.max_agents", 20, "runtime",
    ), err  # fmt: skip
    code, out, err = run(sock, "swarm", "init", "--name", "twenty")
    assert (code, out.strip()) == (0, "swarm twenty created: mesh, balanced, up to 20 agents"), err
    # A key for restart only names where to set it; a typo gets "did you mean".
    code, _, err = run(sock, "config", "set", "redis.connectTimeout", "3000")
    assert code == 1
    assert "redis.connectTimeout (redis.connect_timeout_s) cannot change at runtime" in err
    code, _, err = run(sock, "config", "set", "swarm.maxAgent", "20")
    assert code == 1
    assert "did you mean swarm.maxAgents, swarm.max_agents?" in err
    code, _, err = run(sock, "config", "show", "loop.gate_treshold")
    assert (code, "did you mean loop.gate_threshold" in err) == (1, True)
    code, _, err = run(sock, "config", "set", "agent.maxMemory", "1gb")
    assert (code, "agent.maxMemory has no cfn equivalent" in err) == (1, True)
    run(sock, "--swarm", "twenty", "swarm", "destroy", "--force")


def test_redis_timeout_in_the_file_sets_the_stores_timeout(
    cfnd_factory: CfndFactory, tmp_path: Path
) -> None:
    conf = tmp_path / "cfnd.toml"
    conf.write_text("[redis]\ntimeout = 5000\n")
    sock = cfnd_factory("--config", str(conf), "--redis-url", SHARED_REDIS).socket
    code, out, err = run(sock, "--json", "config", "show", "redis.timeout")
    (entry,) = json.loads(out)["entries"]
    assert (code, entry["key"], entry["value"]) == (0, "redis.command_timeout_s", 5.0), err
    assert entry["source"] == f"file:{conf}"


async def test_redis_timeout_reaches_the_redis_client(daemon_factory: DaemonFactory) -> None:
    daemon = await daemon_factory(config_text="[redis]\ncommandTimeout = 4000\n")
    pool = daemon.store.redis.connection_pool
    assert pool.connection_kwargs["socket_timeout"] == 4.0  # what every command waits


async def test_config_set_redis_timeout_reaches_the_live_clients(
    daemon_factory: DaemonFactory,
) -> None:
    """``config set redis.timeout 5000`` (ms, the guide's spelling) at runtime: the pool's
    new connections and the connections it holds wait 5 s per command from then on."""
    from cfn_client.api import AsyncClient

    daemon = await daemon_factory()
    pool = daemon.store.redis.connection_pool
    await daemon.store.redis.ping()  # a held connection, made with the old timeout
    async with AsyncClient(daemon.socket_path, timeout_s=30) as cfn:
        await cfn.call("config.set", key="redis.timeout", value="5000")
        shown = await cfn.call("config.show", key="redis.command_timeout_s")
    assert [(e.key, e.value, e.source) for e in shown.entries] == [
        ("redis.command_timeout_s", 5.0, "runtime")
    ]
    assert pool.connection_kwargs["socket_timeout"] == 5.0
    held = [*pool._available_connections, *pool._in_use_connections]
    assert held and all(c.socket_timeout == 5.0 for c in held)
    assert daemon.store.cfg.command_timeout_s == 5.0
