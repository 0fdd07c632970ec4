"""cfnctl without a daemon: rendering, exit codes, unreachable/denied sockets, usage errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cfn_client import __version__
from cfn_client.cli import render
from cfn_client.cli.main import cfnctl
from cfn_client.conn.diagnose import connect_error, socket_checks
from cfn_client.wire.errors import (
    EXIT_ERROR,
    EXIT_PERMISSION,
    EXIT_STORE_UNAVAILABLE,
    EXIT_UNREACHABLE,
    CfnError,
    ConfigError,
    DaemonUnreachable,
    InvalidArgs,
    NotFound,
    PermissionDenied,
    ProtocolError,
    RequestTimeout,
    StoreUnavailable,
)
from cfn_client.wire.schema.system import (
    Check,
    ConfigEntry,
    ConfigShowResult,
    DoctorResult,
    ServerStats,
    StatusResult,
    StoreStatus,
    SwarmCounts,
)

CFNCTL = str(Path(sys.executable).parent / "cfnctl")


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short dir others may traverse (0755): socket paths must stay under ~108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="cfnu-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def listening(sock_dir: Path) -> Iterator[Path]:
    """A real listening Unix socket nobody answers on."""
    path = sock_dir / "cfnd.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(8)
    yield path
    s.close()


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cfnctl, list(args), input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def status_result(available: bool = True, verbose: bool = False) -> StatusResult:
    return StatusResult(
        version="0.1.0", pid=42, uptime_s=3725.5, started_at_ms=0, socket="/run/cfn/cfnd.sock",
        state_dir="/var/lib/cfn", config_sources=["defaults", "file:/etc/cfn/cfnd.toml"],
        store=StoreStatus(
            mode="external", url="redis://db:6379/0", available=available, key_prefix="cfn",
            version="7.2.4" if available else None, latency_ms=0.42 if available else None,
            error=None if available else "Connection refused",
            retry_in_s=None if available else 1.5,
            aof_enabled=True,
        ),
        swarms=SwarmCounts(total=2 if available else None),
        server=ServerStats(connections=3, requests_total=10, errors_total=1, inflight=2)
        if verbose else None,
    )  # fmt: skip


# --------------------------------------------------------------------------- render


def test_table_aligns_columns_and_trims_trailing_space() -> None:
    out = render.table(["A", "LONG HEADER", "C"], [["xxxx", "y", ""], ["z", "multi\nline", "w"]])
    assert out.splitlines() == [
        "A     LONG HEADER  C",
        "xxxx  y",
        "z     multi line   w",
    ]


def test_fields_align_values() -> None:
    assert render.fields([("a", 1), ("  long", None), ("b", True)]).splitlines() == [
        "a:      1",
        "  long: (unset)",
        "b:      true",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (4.25, "4.2s"),
        (59.96, "60.0s"),
        (65, "1m 05s"),
        (3725, "1h 02m"),
        (2 * 86400 + 7300, "2d 02h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert render.format_duration(seconds) == text


def test_format_value_is_toml_like() -> None:
    assert [render.format_value(v) for v in (None, False, 0.8, 3, "x", ["a", 1])] == [
        "(unset)", "false", "0.8", "3", "x", '["a",1]',
    ]  # fmt: skip


def test_status_render_shows_mode_url_version_latency_and_swarms() -> None:
    out = render.status(status_result())
    for text in ("cfnd 0.1.0, pid 42, up 1h 02m", "external (available)", "redis://db:6379/0",
                 "7.2.4", "0.42 ms", "swarms:", "file:/etc/cfn/cfnd.toml"):  # fmt: skip
        assert text in out
    assert "connections" not in out
    verbose = render.status(status_result(verbose=True), verbose=True)
    assert "connections" in verbose
    assert "aof" in verbose


def test_status_render_when_store_is_down() -> None:
    result = status_result(available=False)
    out = render.status(result)
    assert "UNAVAILABLE" in out
    assert "Connection refused" in out
    assert "unknown (store unavailable)" in out
    hint = render.store_unavailable_hint(result)
    assert "Redis is unavailable" in hint
    assert "1.5s" in hint


def test_doctor_render_puts_fixes_under_failed_checks() -> None:
    result = DoctorResult(
        ok=False,
        checks=[
            Check(name="a", ok=True, detail="fine"),
            Check(name="redis.reachable", ok=False, detail="down", fix="start Redis"),
            Check(name="persist", ok=False, detail="no AOF", fix="enable AOF", warning=True),
        ],
    )
    lines = render.doctor(result).splitlines()
    assert lines[0].split() == ["CHECK", "RESULT", "DETAIL"]
    assert lines[2].split()[:2] == ["redis.reachable", "FAIL"]
    fix_col = lines[0].index("DETAIL")
    assert lines[3] == " " * fix_col + "fix: start Redis"
    assert "WARN" in lines[4]
    assert lines[-1] == "1 check(s) failed, 1 warning(s)"


def test_config_show_table() -> None:
    result = ConfigShowResult(
        entries=[
            ConfigEntry(key="loop.gate_threshold", value=0.8, source="runtime"),
            ConfigEntry(key="redis.url", value=None, source="default"),
        ]
    )
    assert render.config_show(result).splitlines() == [
        "KEY                  VALUE    SOURCE",
        "loop.gate_threshold  0.8      runtime",
        "redis.url            (unset)  default",
    ]


def test_json_output_is_one_document() -> None:
    doc = json.loads(render.to_json(status_result()))
    assert doc["store"]["mode"] == "external"
    first, second = (json.loads(line) for line in render.json_lines([{"a": 1}, status_result()]))
    assert first == {"a": 1}
    assert second["store"]["mode"] == "external"


def test_error_text_and_document() -> None:
    err = ConfigError(
        "x.toml: key loop.gate_threshold is invalid",
        details={"file": "x.toml", "key": "loop.gate_threshold", "value": 7.5, "expected": "<= 1"},
    )
    lines = render.error_text(err).splitlines()
    assert lines[0] == "cfnctl: error[invalid_config]: x.toml: key loop.gate_threshold is invalid"
    # Details already in the message are not repeated.
    assert lines[1:] == ["  value: 7.5", "  expected: <= 1"]
    doc = render.error_document(ProtocolError("no such op", code="unknown_op"))
    assert doc == {
        "ok": False,
        "error": {"code": "unknown_op", "message": "no such op", "details": {}, "exit_code": 1},
    }


# --------------------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    ("err", "code"),
    [
        (CfnError("x"), EXIT_ERROR),
        (InvalidArgs("x"), EXIT_ERROR),
        (NotFound("x"), EXIT_ERROR),
        (ConfigError("x"), EXIT_ERROR),
        (StoreUnavailable("x"), EXIT_STORE_UNAVAILABLE),
        (RequestTimeout("x"), EXIT_ERROR),
        (ProtocolError("x"), EXIT_ERROR),
        (DaemonUnreachable("x"), EXIT_UNREACHABLE),
        (PermissionDenied("x"), EXIT_PERMISSION),
        (CfnError.from_wire("permission_denied", "x", None), EXIT_PERMISSION),
        (CfnError.from_wire("no_such_code_yet", "x", None), EXIT_ERROR),
    ],
)
def test_exit_codes_follow_error_classes(err: CfnError, code: int) -> None:
    assert err.exit_code == code


@pytest.mark.parametrize(
    ("exc", "cls", "text"),
    [
        (FileNotFoundError(errno.ENOENT, "x"), DaemonUnreachable, "no such socket"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "x"), DaemonUnreachable, "stale socket"),
        (PermissionError(errno.EACCES, "x"), PermissionDenied, "permission denied"),
        (TimeoutError(), RequestTimeout, "timed out connecting"),
        (OSError(errno.ENAMETOOLONG, "File name too long"), DaemonUnreachable, "too long"),
    ],
)
def test_connect_errors_map_to_cfn_errors(
    exc: OSError, cls: type[CfnError], text: str, sock_dir: Path
) -> None:
    err = connect_error(exc, sock_dir / "cfnd.sock")
    assert type(err) is cls
    assert text in err.message
    assert str(sock_dir / "cfnd.sock") in err.message
    if cls is DaemonUnreachable:
        assert "systemctl start cfnd" in err.message
        assert "CFN_SOCKET" in err.message


def test_socket_checks(sock_dir: Path, listening: Path) -> None:
    checks, err = socket_checks(sock_dir / "missing.sock")
    assert [(c.name, c.ok) for c in checks] == [("socket.exists", False)]
    assert isinstance(err, DaemonUnreachable)
    (sock_dir / "file").write_text("")
    checks, err = socket_checks(sock_dir / "file")
    assert [(c.name, c.ok) for c in checks] == [("socket.exists", True), ("socket.type", False)]
    assert "regular file" in checks[-1].detail
    checks, err = socket_checks(listening)
    assert err is None
    assert all(c.ok for c in checks)


# --------------------------------------------------------------------------- cfnctl, no daemon


def test_cfnctl_missing_socket_exits_3_with_how_to_start(sock_dir: Path) -> None:
    missing = sock_dir / "nope.sock"
    proc = subprocess.run(
        [CFNCTL, "--socket", str(missing), "status"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == EXIT_UNREACHABLE, proc.stderr
    assert proc.stdout == ""
    msg = proc.stderr
    assert msg.startswith("cfnctl: error[daemon_unreachable]: cannot reach cfnd at ")
    for text in (str(missing), "`cfnd`", "systemctl start cfnd", "--socket", "CFN_SOCKET"):
        assert text in msg
    assert "Traceback" not in msg


def test_cfnctl_socket_from_environment(sock_dir: Path) -> None:
    env = {**os.environ, "CFN_SOCKET": str(sock_dir / "env.sock")}
    proc = subprocess.run(
        [CFNCTL, "--json", "ping"], capture_output=True, text=True, timeout=30, env=env
    )
    assert proc.returncode == EXIT_UNREACHABLE
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False
    assert doc["error"]["code"] == "daemon_unreachable"
    assert doc["error"]["details"]["socket"] == str(sock_dir / "env.sock")


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["ping"],
        ["doctor"],
        ["test", "redis-connection"],
        ["config", "show"],
        ["config", "set", "loop.gate_threshold", "0.8"],
        ["config", "reset", "--yes"],
        ["config", "validate"],
    ],
)
def test_every_command_reports_unreachable_the_same_way(sock_dir: Path, args: list[str]) -> None:
    code, out, err = run("--socket", str(sock_dir / "x.sock"), *args)
    assert code == EXIT_UNREACHABLE
    assert "systemctl start cfnd" in out + err


def test_doctor_without_daemon_explains_each_local_failure(sock_dir: Path) -> None:
    code, out, _ = run("--socket", str(sock_dir / "x.sock"), "doctor")
    assert code == EXIT_UNREACHABLE
    assert "socket.exists" in out
    assert "FAIL" in out
    assert "fix: start cfnd" in out
    (sock_dir / "plain").write_text("")
    code, out, _ = run("--socket", str(sock_dir / "plain"), "--json", "doctor")
    assert code == EXIT_UNREACHABLE
    doc = json.loads(out)
    assert doc["ok"] is False
    assert [c["name"] for c in doc["checks"]] == ["socket.exists", "socket.type"]


def test_reset_all_asks_on_a_terminal(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cfn_client.cli.commands import config as config_cmd

    monkeypatch.setattr(config_cmd, "interactive", lambda: True)
    sock = str(sock_dir / "x.sock")
    code, _, err = run("--socket", sock, "config", "reset", input="n\n")
    assert code == 1
    assert "Reset every runtime override?" in err
    # Confirmed: it goes on to connect (and finds no daemon).
    code, _, err = run("--socket", sock, "config", "reset", input="y\n")
    assert code == EXIT_UNREACHABLE


def test_reset_all_without_terminal_or_with_json_needs_yes(sock_dir: Path) -> None:
    sock = str(sock_dir / "x.sock")
    for args in (["config", "reset"], ["--json", "config", "reset"]):
        code, out, err = run("--socket", sock, *args, input="y\n")
        assert code == 2
        assert "--yes" in out + err
        assert "Reset every" not in out + err
    code, _, err = run("--socket", sock, "--json", "config", "reset", "--yes")
    assert code == EXIT_UNREACHABLE
    code, _, err = run("--socket", sock, "config", "reset", "loop.gate_threshold")
    assert code == EXIT_UNREACHABLE
    assert "Reset every" not in err


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["frobnicate"],
        ["config", "set", "only-a-key"],
        ["config", "show", "a", "b"],
        ["--timeout", "0", "ping"],
        ["--timeout", "soon", "ping"],
        ["config", "validate", "/nonexistent/cfnd.toml"],
        ["test", "nothing"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    code, out, err = run(*args)
    assert code == 2, (out, err)
    assert "Usage:" in err or "Error:" in err


def test_usage_errors_after_json_flag_are_json() -> None:
    code, out, _ = run("--json", "config", "set", "only-a-key")
    assert code == 2
    doc = json.loads(out)
    assert (doc["ok"], doc["error"]["code"], doc["error"]["exit_code"]) == (False, "usage_error", 2)
    assert "VALUE" in doc["error"]["message"]


def test_help_documents_exit_codes_and_version() -> None:
    code, out, _ = run("--help")
    assert code == 0
    assert "Exit codes:" in out
    for line in ("0  success", "2  usage error", "3  cfnd unreachable", "4  permission denied"):
        assert line in out
    code, out, _ = run("--version")
    assert (code, out.split()) == (0, ["cfnctl", __version__])


def test_validate_rejects_non_utf8_file_locally(sock_dir: Path) -> None:
    bad = sock_dir / "bad.toml"
    bad.write_bytes(b"[loop]\nx = '\xff'\n")
    code, _, err = run("--socket", str(sock_dir / "x.sock"), "config", "validate", str(bad))
    assert code == EXIT_ERROR
    assert "not UTF-8" in err
    assert str(bad) in err


# --------------------------------------------------------------------------- permission denied


def _nobody_cmd() -> list[str] | None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return None
    cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run(
        [*cmd, sys.executable, "-c", "import cfn_client.cli.main"],
        capture_output=True, cwd="/", timeout=30,
    )  # fmt: skip
    return cmd if probe.returncode == 0 else None


NOBODY = _nobody_cmd()
needs_nobody = pytest.mark.skipif(NOBODY is None, reason="needs root and setpriv to drop to nobody")


def _run_as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    assert NOBODY is not None
    return subprocess.run(
        [*NOBODY, sys.executable, "-m", "cfn_client.cli.main", *args],
        capture_output=True, text=True, cwd="/", timeout=30,
    )  # fmt: skip


@needs_nobody
def test_socket_without_access_exits_4_naming_the_group(listening: Path) -> None:
    listening.chmod(0o600)  # root only: nobody is not in its group
    proc = _run_as_nobody("--socket", str(listening), "status")
    assert proc.returncode == EXIT_PERMISSION, proc.stderr
    assert proc.stderr.startswith("cfnctl: error[permission_denied]: permission denied")
    assert str(listening) in proc.stderr
    assert "must be in the socket's group root" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_nobody
def test_doctor_explains_socket_permissions(listening: Path) -> None:
    listening.chmod(0o000)
    proc = _run_as_nobody("--socket", str(listening), "--json", "doctor")
    assert proc.returncode == EXIT_PERMISSION, proc.stderr
    doc = json.loads(proc.stdout)
    last = doc["checks"][-1]
    assert (last["name"], last["ok"]) == ("socket.access", False)
    assert "usermod -aG root" in last["fix"]


@needs_nobody
def test_unsearchable_directory_exits_4(listening: Path) -> None:
    listening.parent.chmod(0o700)
    proc = _run_as_nobody("--socket", str(listening), "ping")
    assert proc.returncode == EXIT_PERMISSION, proc.stderr
    assert "cannot search a directory" in proc.stderr
