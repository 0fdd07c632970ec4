"""Config that is accepted has an effect, and config that is wrong stops cfnd with
EX_CONFIG (78) and a clear message: against the real cfnd executable."""

from __future__ import annotations

import grp
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import SHARED_REDIS
from tests.daemon_proc import CFND, CfndProcess, cfnctl

CfndFactory = Callable[..., CfndProcess]


def _cfnd_once(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CFND, "--socket", str(tmp_path / "s.sock"), "--state-dir", str(tmp_path / "st"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("CFN_")},
    )


def test_non_utf8_config_file_exits_78_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "cfnd.toml"
    bad.write_bytes(b"[loop]\nmax_loop2 = 3\n# caf\xe9\n")
    res = _cfnd_once(tmp_path, "--config", str(bad), "--redis-url", SHARED_REDIS)
    assert res.returncode == 78, res
    assert str(bad) in res.stderr
    assert "UTF-8" in res.stderr and "byte 26" in res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_socket_group_exits_78_and_leaves_no_socket(tmp_path: Path) -> None:
    conf = tmp_path / "cfnd.toml"
    conf.write_text('[daemon]\nsocket_group = "no-such-group-cfn"\n')
    res = _cfnd_once(tmp_path, "--config", str(conf), "--redis-url", SHARED_REDIS)
    assert res.returncode == 78, res
    assert "daemon.socket_group" in res.stderr and "no-such-group-cfn" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "s.sock").exists()


def test_known_socket_group_is_applied(cfnd_factory: CfndFactory, tmp_path: Path) -> None:
    group = grp.getgrgid(os.getegid()).gr_name
    conf = tmp_path / "cfnd.toml"
    conf.write_text(f'[daemon]\nsocket_group = "{group}"\n')
    proc = cfnd_factory("--config", str(conf), "--redis-url", SHARED_REDIS)
    assert os.stat(proc.socket).st_gid == os.getegid()
    assert proc.stop() == 0


def _types(proc: CfndProcess) -> set[str]:
    res = cfnctl(proc.socket, "--json", "config", "show")
    assert res.returncode == 0, res
    keys = {e["key"] for e in json.loads(res.stdout)["entries"]}
    return {k.split(".")[1] for k in keys if k.startswith("agent_types.")}


def test_sighup_with_added_and_removed_agent_types(
    cfnd_factory: CfndFactory, tmp_path: Path
) -> None:
    conf = tmp_path / "cfnd.toml"
    conf.write_text('[agent_types.first]\nkind = "shell"\n')
    proc = cfnd_factory("--config", str(conf), "--redis-url", SHARED_REDIS)
    assert _types(proc) == {"first"}

    conf.write_text(
        '[agent_types.first]\nkind = "shell"\n\n[agent_types.second]\nkind = "shell"\n'
        'exec = ["sh", "-c"]\n'
    )
    proc.send_signal(signal.SIGHUP)
    proc.wait_for("STATUS=config reloaded")
    assert _types(proc) == {"first", "second"}

    proc.notifications.clear()
    conf.write_text('[agent_types.second]\nkind = "shell"\n')
    proc.send_signal(signal.SIGHUP)
    proc.wait_for("STATUS=config reloaded")
    assert _types(proc) == {"second"}
    assert cfnctl(proc.socket, "ping").returncode == 0
    assert proc.stop() == 0
