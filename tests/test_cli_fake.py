"""cfnctl commands end to end against the in-test fake cfnd (no Redis, no cfn_daemon)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from cfn_client.cli.main import cfnctl
from tests.test_client_connection import FakeCfnd, fake, fake_factory, sock_dir

__all__ = ["fake", "fake_factory", "sock_dir"]  # fixtures, imported for pytest


def run(fake: FakeCfnd, *args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cfnctl, ["--socket", str(fake.path), *args], input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_status_human_and_json(fake: FakeCfnd) -> None:
    code, out, err = run(fake, "status")
    assert code == 0, err
    assert "embedded (available)" in out
    assert "up 1h 02m" in out
    code, out, _ = run(fake, "--json", "status", "--verbose")
    assert code == 0
    doc = json.loads(out)
    assert doc["store"]["mode"] == "embedded"
    assert doc["server"]["connections"] == 1


def test_status_exits_1_when_store_is_unavailable(
    fake_factory: Callable[..., FakeCfnd],
) -> None:
    fake = fake_factory(store_available=False)
    code, out, err = run(fake, "status")
    assert code == 1
    assert "UNAVAILABLE" in out  # the status is still printed
    assert "Redis is unavailable" in err
    assert "retry" in err
    code, out, _ = run(fake, "--json", "status")
    assert code == 1
    assert json.loads(out)["store"]["available"] is False


def test_ping(fake: FakeCfnd) -> None:
    code, out, _ = run(fake, "ping")
    assert code == 0
    assert out.startswith("pong from cfnd in ")
    code, out, _ = run(fake, "--json", "ping")
    doc = json.loads(out)
    assert doc["pong"] is True
    assert doc["rtt_ms"] >= 0


def test_doctor_passes_with_only_warnings(fake: FakeCfnd) -> None:
    code, out, _ = run(fake, "doctor")
    assert code == 0, out
    names = [line.split()[0] for line in out.splitlines()[1:] if line and not line[0].isspace()]
    assert names[:5] == [
        "socket.exists", "socket.type", "socket.access", "daemon.connect", "redis.reachable",
    ]  # fmt: skip
    assert "WARN" in out
    assert "all checks passed, 1 warning(s)" in out


def test_doctor_and_alias_fail_with_exit_1(fake_factory: Callable[..., FakeCfnd]) -> None:
    fake = fake_factory(doctor_ok=False)
    for args in (["doctor"], ["test", "redis-connection"]):
        code, out, _ = run(fake, *args)
        assert code == 1
        assert "fix: start Redis" in out
    code, out, _ = run(fake, "--json", "test", "redis-connection")
    assert code == 1
    assert json.loads(out)["ok"] is False


def test_config_set_show_reset(fake: FakeCfnd) -> None:
    code, out, _ = run(fake, "config", "set", "loop.gate_threshold", "0.8")
    assert (code, out.strip()) == (0, "loop.gate_threshold = 0.8 (was 0.75; source runtime)")
    code, out, _ = run(fake, "--json", "config", "show", "loop.gate_threshold")
    assert json.loads(out)["entries"] == [
        {"key": "loop.gate_threshold", "value": 0.8, "source": "runtime"}
    ]
    code, out, _ = run(fake, "config", "show")
    assert out.splitlines()[0].split() == ["KEY", "VALUE", "SOURCE"]
    code, out, _ = run(fake, "config", "reset", "--yes")
    assert (code, out.strip()) == (0, "reset 1 runtime override(s): loop.gate_threshold")
    code, out, _ = run(fake, "--json", "config", "reset")
    assert code == 2  # a script must say --yes to wipe every override
    code, out, _ = run(fake, "--json", "config", "reset", "--yes")
    assert (code, json.loads(out)) == (0, {"reset": []})


def test_config_set_refused_key_exits_1_with_message(fake: FakeCfnd) -> None:
    code, out, err = run(fake, "config", "set", "redis.url", "x")
    assert code == 1
    assert out == ""
    assert err.startswith("cfnctl: error[invalid_config]: redis.url cannot change at runtime")
    code, out, _ = run(fake, "--json", "config", "set", "redis.url", "x")
    doc = json.loads(out)
    assert (code, doc["ok"], doc["error"]["code"]) == (1, False, "invalid_config")


def test_config_show_unknown_key(fake: FakeCfnd) -> None:
    code, _, err = run(fake, "config", "show", "nope.key")
    assert code == 1
    assert "error[not_found]" in err


def test_config_validate_file_stdin_and_effective(fake: FakeCfnd, sock_dir: Path) -> None:
    good = sock_dir / "good.toml"
    good.write_text("[loop]\ngate_threshold = 0.5\n")
    code, out, _ = run(fake, "config", "validate", str(good))
    assert (code, out.strip()) == (0, f"{good}: valid")
    bad = sock_dir / "bad.toml"
    bad.write_text("[loop]\ngate_threshold = 7.5\n")
    code, out, err = run(fake, "config", "validate", str(bad))
    assert code == 1
    assert str(bad) in err
    assert "loop.gate_threshold" in err
    assert "7.5" in err
    code, out, err = run(fake, "config", "validate", "-", input="[loop]\ngate_threshold = 7.5\n")
    assert code == 1
    assert "<stdin>" in err
    code, out, _ = run(fake, "--json", "config", "validate")
    assert (code, json.loads(out)) == (0, {"valid": True, "source": "defaults"})
    received = [r for r in fake.received if r.op == "config.validate"]
    assert received[-1].args == {}  # no FILE: the daemon validates its own config


def test_timeout_flag_applies(fake: FakeCfnd) -> None:
    code, _, err = run(fake, "--timeout", "0.05", "config", "show")
    assert code == 0, err
