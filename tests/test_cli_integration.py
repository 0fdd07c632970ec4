"""cfnctl and the Python clients against a real cfnd (with Redis behind it).

Uses the ``cfnd`` fixture from conftest: a running daemon whose ``socket``
attribute is its socket path. The CLI tests run the installed ``cfnctl``
console script exactly as users do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

import anyio
import pytest

from cfn_client.api import AsyncClient, Client
from cfn_client.conn.async_ import AsyncConnection
from cfn_client.wire.errors import ConfigError, InvalidArgs, ProtocolError
from cfn_client.wire.schema.system import PingResult, StatusResult

CFNCTL = str(Path(sys.executable).parent / "cfnctl")
MODES = ("embedded", "external", "cluster")


class HasSocket(Protocol):
    socket: Path


def cfnctl(
    cfnd: HasSocket, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CFNCTL, "--socket", str(cfnd.socket), *args],
        input=input, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def cfnctl_json(cfnd: HasSocket, *args: str) -> tuple[int, Any]:
    proc = cfnctl(cfnd, "--json", *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"cfnctl --json {' '.join(args)} printed non-JSON: {proc.stdout!r}")


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--verbose"],
        ["ping"],
        ["doctor"],
        ["test", "redis-connection"],
        ["config", "show"],
        ["config", "show", "loop.gate_threshold"],
        ["config", "set", "loop.max_loop2", "5"],
        ["config", "reset", "loop.max_loop2"],
        ["config", "reset", "--yes"],
        ["config", "validate"],
    ],
)
def test_every_command_prints_one_json_document(cfnd: HasSocket, args: list[str]) -> None:
    code, doc = cfnctl_json(cfnd, *args)
    # doctor may fail a check on a given Redis (e.g. eviction policy): the JSON must still parse.
    allowed = (0, 1) if args[0] in ("doctor", "test") else (0,)
    assert code in allowed, doc
    assert isinstance(doc, dict)
    assert doc.get("ok") is not False or args[0] in ("doctor", "test"), doc


def test_status_shows_store_mode(cfnd: HasSocket) -> None:
    code, doc = cfnctl_json(cfnd, "status")
    assert code == 0
    store = doc["store"]
    assert store["mode"] in MODES
    assert store["available"] is True
    assert store["version"]
    proc = cfnctl(cfnd, "status")
    assert proc.returncode == 0, proc.stderr
    assert f"{store['mode']} (available)" in proc.stdout
    assert store["url"] in proc.stdout
    assert str(cfnd.socket) in proc.stdout
    assert "swarms:" in proc.stdout


def test_ping(cfnd: HasSocket) -> None:
    proc = cfnctl(cfnd, "ping")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pong from cfnd in ")
    code, doc = cfnctl_json(cfnd, "ping")
    assert (code, doc["pong"]) == (0, True)
    assert doc["rtt_ms"] >= 0


def test_doctor(cfnd: HasSocket) -> None:
    code, doc = cfnctl_json(cfnd, "doctor")
    names = [c["name"] for c in doc["checks"]]
    assert names[:4] == ["socket.exists", "socket.type", "socket.access", "daemon.connect"]
    assert "redis.reachable" in names
    hard_failures = [c for c in doc["checks"] if not c["ok"] and not c.get("warning")]
    assert doc["ok"] is (not hard_failures)
    assert code == (0 if doc["ok"] else 1)
    proc = cfnctl(cfnd, "test", "redis-connection")
    assert proc.returncode == code
    assert "redis.reachable" in proc.stdout


def test_config_set_then_show_reports_runtime_source(cfnd: HasSocket) -> None:
    proc = cfnctl(cfnd, "config", "set", "loop.gate_threshold", "0.8")
    assert proc.returncode == 0, proc.stderr
    assert "loop.gate_threshold = 0.8" in proc.stdout
    code, doc = cfnctl_json(cfnd, "config", "show", "loop.gate_threshold")
    assert code == 0
    assert doc["entries"] == [{"key": "loop.gate_threshold", "value": 0.8, "source": "runtime"}]
    proc = cfnctl(cfnd, "config", "show", "loop.gate_threshold")
    row = proc.stdout.splitlines()[1].split()
    assert row == ["loop.gate_threshold", "0.8", "runtime"]


def test_config_set_of_a_restart_only_key_fails(cfnd: HasSocket) -> None:
    proc = cfnctl(cfnd, "config", "set", "redis.url", "x")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("cfnctl: error[")
    assert "redis.url" in proc.stderr
    code, doc = cfnctl_json(cfnd, "config", "set", "redis.url", "x")
    assert (code, doc["ok"]) == (1, False)
    assert doc["error"]["code"] and doc["error"]["message"]


def test_config_set_rejects_out_of_range_value(cfnd: HasSocket) -> None:
    proc = cfnctl(cfnd, "config", "set", "loop.gate_threshold", "7.5")
    assert proc.returncode == 1
    assert "loop.gate_threshold" in proc.stderr
    _, doc = cfnctl_json(cfnd, "config", "show", "loop.gate_threshold")
    assert doc["entries"][0]["value"] != 7.5


def test_config_reset(cfnd: HasSocket) -> None:
    assert cfnctl(cfnd, "config", "set", "loop.gate_threshold", "0.8").returncode == 0
    assert cfnctl(cfnd, "config", "set", "loop.max_loop3", "4").returncode == 0
    # Without a terminal to confirm on, resetting everything needs --yes; nothing changes.
    proc = cfnctl(cfnd, "config", "reset", input="y\n")
    assert proc.returncode == 2
    assert "--yes" in proc.stderr
    _, doc = cfnctl_json(cfnd, "config", "show", "loop.gate_threshold")
    assert doc["entries"][0]["source"] == "runtime"
    # One key.
    code, doc = cfnctl_json(cfnd, "config", "reset", "loop.max_loop3")
    assert (code, doc["reset"]) == (0, ["loop.max_loop3"])
    # Everything left, without a prompt.
    proc = cfnctl(cfnd, "config", "reset", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "loop.gate_threshold" in proc.stdout
    _, doc = cfnctl_json(cfnd, "config", "show", "loop.gate_threshold")
    entry = doc["entries"][0]
    assert entry["source"] != "runtime"
    assert entry["value"] == 0.75


def test_config_validate_bad_file_names_file_key_and_value(cfnd: HasSocket, tmp_path: Path) -> None:
    bad = tmp_path / "cfnd.toml"
    bad.write_text("[loop]\ngate_threshold = 7.5\n")
    proc = cfnctl(cfnd, "config", "validate", str(bad))
    assert proc.returncode == 1
    assert proc.stderr.startswith("cfnctl: error[invalid_config]: ")
    for text in (str(bad), "loop.gate_threshold", "7.5"):
        assert text in proc.stderr
    code, doc = cfnctl_json(cfnd, "config", "validate", str(bad))
    assert (code, doc["error"]["code"]) == (1, "invalid_config")
    assert doc["error"]["details"]["key"] == "loop.gate_threshold"
    # The same through stdin.
    proc = cfnctl(cfnd, "config", "validate", "-", input="[loop]\ngate_threshold = 7.5\n")
    assert proc.returncode == 1
    assert "<stdin>" in proc.stderr
    # Unknown keys and bad TOML are caught too.
    bad.write_text("[loop]\ngate_treshold = 0.5\n")
    proc = cfnctl(cfnd, "config", "validate", str(bad))
    assert proc.returncode == 1
    assert "gate_treshold" in proc.stderr
    bad.write_text("[loop\n")
    assert cfnctl(cfnd, "config", "validate", str(bad)).returncode == 1


def test_config_validate_good_file_and_effective_config(cfnd: HasSocket, tmp_path: Path) -> None:
    good = tmp_path / "cfnd.toml"
    good.write_text("[loop]\ngate_threshold = 0.6\nmax_loop2 = 3\n")
    proc = cfnctl(cfnd, "config", "validate", str(good))
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout
    code, doc = cfnctl_json(cfnd, "config", "validate")
    assert (code, doc["valid"]) == (0, True)


def test_unreachable_after_daemon_socket_is_gone(cfnd: HasSocket, tmp_path: Path) -> None:
    proc = subprocess.run(
        [CFNCTL, "--socket", str(tmp_path / "other.sock"), "status"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3
    assert "systemctl start cfnd" in proc.stderr


# --------------------------------------------------------------------------- Python API


def test_sync_client_roundtrip(cfnd: HasSocket) -> None:
    with Client(cfnd.socket) as cfn:
        hello = cfn.hello()
        assert hello.protocol == 1
        assert hello.role in ("viewer", "operator", "admin")
        assert isinstance(cfn.ping(), PingResult)
        status = cfn.status(verbose=True)
        assert isinstance(status, StatusResult)
        assert status.store.mode in MODES
        assert status.server is not None
        assert cfn.config_set("loop.gate_threshold", "0.85").value == 0.85
        assert cfn.config_show("loop.gate_threshold").entries[0].source == "runtime"
        assert "loop.gate_threshold" in cfn.config_reset().reset
        assert cfn.config_validate("[loop]\nmax_loop2 = 2\n", name="x.toml").valid
        with pytest.raises(ConfigError):
            cfn.config_validate("[loop]\nmax_loop2 = 0\n", name="x.toml")
        with pytest.raises(ProtocolError) as info:
            cfn.call("stauts")
        assert info.value.instance_code == "unknown_op"
        assert "status" in info.value.message  # close matches are suggested
        # Bypass the client-side check: the daemon must name the field itself.
        conn = cfn._connection()
        with pytest.raises(InvalidArgs, match="verbose"):
            conn.request("status", {"verbose": "yes"})
        assert cfn.ping().pong  # the connection survives errors


async def test_async_clients_50_by_100(cfnd: HasSocket) -> None:
    answered = 0

    async def worker(n: int) -> None:
        nonlocal answered
        async with AsyncClient(cfnd.socket, timeout_s=30) as cfn:
            for i in range(100):
                if (n + i) % 2:
                    assert (await cfn.ping()).pong
                else:
                    assert (await cfn.status()).store.available
                answered += 1

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(worker, n)
    assert answered == 50 * 100


async def test_one_connection_200_pipelined_requests(cfnd: HasSocket) -> None:
    results: dict[int, Any] = {}
    async with AsyncConnection(cfnd.socket, timeout_s=30) as conn:

        async def one(i: int) -> None:
            op, args = ("status", {"verbose": True}) if i % 3 == 0 else ("ping", {})
            results[i] = (op, await conn.request(op, args))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(200):
                    tg.start_soon(one, i)
    assert len(results) == 200
    for op, result in results.values():
        # Each reply matches the op of the request it was correlated to.
        assert ("pong" in result) == (op == "ping")
        assert ("store" in result) == (op == "status")


def test_run_with_an_idempotency_key_queues_once(cfnd: HasSocket) -> None:
    assert cfnctl(cfnd, "swarm", "init", "mesh", "2", "--name", "idem").returncode == 0
    first = cfnctl(cfnd, "run", "echo once", "--type", "shell", "--idempotency-key", "deploy-7")
    again = cfnctl(cfnd, "run", "echo once", "--type", "shell", "--idempotency-key", "deploy-7")
    assert first.returncode == again.returncode == 0, (first.stderr, again.stderr)
    assert first.stdout == again.stdout  # the same task id
    other = cfnctl(cfnd, "run", "echo twice", "--type", "shell", "--idempotency-key", "deploy-7")
    assert other.returncode != 0 and "different text or type" in other.stderr
    code, tasks = cfnctl_json(cfnd, "task", "list")
    assert code == 0 and [t["id"] for t in tasks["tasks"]] == [first.stdout.strip()]
