"""``cfnctl status``, ``ping``, ``doctor`` and ``config`` exactly as they print, against a
real cfnd of each test's own (config changes are daemon-wide, so nothing is shared).

test_cli_integration.py covers the same commands through the installed console script;
here they run in-process (CliRunner), which lets every line be checked cheaply.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.cli_support import run
from tests.daemon_proc import CfndProcess
from tests.redis_servers import RedisProcess


def test_status_human_and_json(cfnd: CfndProcess) -> None:
    code, out, err = run(cfnd.socket, "status")
    assert (code, err) == (0, "")
    assert "external (available)" in out
    uptime = next(line for line in out.splitlines() if "up " in line)
    assert uptime.split("up ", 1)[1].split()[0].endswith(("s", "m"))
    code, out, _ = run(cfnd.socket, "--json", "status", "--verbose")
    doc = json.loads(out)
    assert code == 0
    assert (doc["store"]["mode"], doc["store"]["available"]) == ("external", True)
    assert doc["server"]["connections"] >= 1  # this one


def test_status_and_doctor_exit_1_when_redis_is_down(
    cfnd_factory: Callable[..., CfndProcess], redis_factory: Callable[..., RedisProcess]
) -> None:
    server = redis_factory()
    proc = cfnd_factory("--redis-url", server.url)
    server.stop()
    proc.wait_for(f"STATUS=serving on {proc.socket}; Redis UNAVAILABLE")
    code, out, err = run(proc.socket, "status")
    assert code == 1
    assert "UNAVAILABLE" in out  # the status is still printed
    assert "Redis is unavailable" in err
    assert "retry" in err
    code, out, _ = run(proc.socket, "--json", "status")
    assert (code, json.loads(out)["store"]["available"]) == (1, False)
    for args in (["doctor"], ["test", "redis-connection"]):
        code, out, _ = run(proc.socket, *args)
        assert code == 1, out
        assert "redis.reachable" in out
        assert "FAIL" in out
    code, out, _ = run(proc.socket, "--json", "test", "redis-connection")
    assert (code, json.loads(out)["ok"]) == (1, False)


def test_ping_and_doctor(cfnd: CfndProcess) -> None:
    code, out, _ = run(cfnd.socket, "ping")
    assert (code, out.startswith("pong from cfnd in ")) == (0, True)
    code, out, _ = run(cfnd.socket, "doctor")
    names = [line.split()[0] for line in out.splitlines()[1:] if line and not line[0].isspace()]
    assert names[:4] == ["socket.exists", "socket.type", "socket.access", "daemon.connect"]
    assert "redis.reachable" in names
    assert code in (0, 1)  # a given Redis may fail a check (e.g. its eviction policy)
    code_json, out, _ = run(cfnd.socket, "--json", "doctor")
    doc = json.loads(out)
    hard = [c["name"] for c in doc["checks"] if not c["ok"] and not c.get("warning")]
    assert (code_json, doc["ok"]) == (code, not hard)


def test_config_set_show_reset(cfnd: CfndProcess) -> None:
    sock = cfnd.socket
    code, out, _ = run(sock, "config", "set", "loop.gate_threshold", "0.8")
    assert (code, out.strip()) == (0, "loop.gate_threshold = 0.8 (was 0.75; source runtime)")
    code, out, _ = run(sock, "--json", "config", "show", "loop.gate_threshold")
    assert json.loads(out)["entries"] == [
        {"key": "loop.gate_threshold", "value": 0.8, "source": "runtime"}
    ]
    code, out, _ = run(sock, "config", "show")
    assert out.splitlines()[0].split() == ["KEY", "VALUE", "SOURCE"]
    assert ["loop.gate_threshold", "0.8", "runtime"] in [line.split() for line in out.splitlines()]
    code, out, _ = run(sock, "--json", "config", "reset")
    assert code == 2  # a script must say --yes to wipe every override
    code, out, _ = run(sock, "config", "reset", "--yes")
    assert (code, out.strip()) == (0, "reset 1 runtime override(s): loop.gate_threshold")
    code, out, _ = run(sock, "--json", "config", "reset", "--yes")
    assert (code, json.loads(out)) == (0, {"reset": []})
    code, out, _ = run(sock, "--json", "config", "show", "loop.gate_threshold")
    assert json.loads(out)["entries"][0]["value"] == 0.75
    # Refused keys, unknown keys and bad values: exit 1, a specific message, nothing on stdout.
    code, out, err = run(sock, "config", "set", "redis.url", "x")
    assert (code, out) == (1, "")
    assert err.startswith("cfnctl: error[invalid_config]: redis.url cannot change at runtime")
    code, out, _ = run(sock, "--json", "config", "set", "redis.url", "x")
    doc = json.loads(out)
    assert (code, doc["ok"], doc["error"]["code"]) == (1, False, "invalid_config")
    code, _, err = run(sock, "config", "show", "nope.key")
    assert (code, "error[not_found]: unknown config key 'nope.key'" in err) == (1, True)
    code, _, err = run(sock, "config", "set", "loop.gate_threshold", "7.5")
    assert (code, "loop.gate_threshold" in err) == (1, True)


def test_config_validate_file_stdin_and_effective(cfnd: CfndProcess, tmp_path: Path) -> None:
    sock = cfnd.socket
    good = tmp_path / "good.toml"
    good.write_text("[loop]\ngate_threshold = 0.5\n")
    code, out, _ = run(sock, "config", "validate", str(good))
    assert (code, out.strip()) == (0, f"{good}: valid")
    bad = tmp_path / "bad.toml"
    bad.write_text("[loop]\ngate_threshold = 7.5\n")
    code, out, err = run(sock, "config", "validate", str(bad))
    assert code == 1
    for text in (str(bad), "loop.gate_threshold", "7.5"):
        assert text in err
    code, out, err = run(sock, "config", "validate", "-", input="[loop]\ngate_threshold = 7.5\n")
    assert (code, "<stdin>" in err) == (1, True)
    # No FILE: cfnd re-checks its own configuration (this one has none: defaults).
    code, out, _ = run(sock, "--json", "config", "validate")
    assert (code, json.loads(out)) == (0, {"valid": True, "source": "defaults"})


def test_timeout_flag_applies(cfnd: CfndProcess) -> None:
    code, _, err = run(cfnd.socket, "--timeout", "5", "config", "show")
    assert code == 0, err
    code, _, err = run(cfnd.socket, "--timeout", "soon", "config", "show")
    assert code == 2
