"""The systemd units in deploy/systemd pass ``systemd-analyze verify`` and ``security``
(exposure <= 3.0) offline, via scripts/verify-units (which CI runs too), carry the
hardening the agents can live with, and a broken unit is caught.

What no test here can show: the sandbox in effect (no systemd runs in the test
container); cfnd's sd_notify (READY, WATCHDOG, STOPPING) is tested against a real
notify socket in test_daemon_process.py and below.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SHARED_REDIS
from tests.daemon_proc import CfndProcess

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "deploy" / "systemd"
VERIFY = ROOT / "scripts" / "verify-units"


def _directives(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_units_verify_and_are_hardened_enough() -> None:
    res = subprocess.run([str(VERIFY)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    levels = [float(x) for x in re.findall(r"exposure ([0-9.]+) <= 3\.0", res.stdout)]
    assert len(levels) == 2 and all(level <= 3.0 for level in levels), res.stdout
    assert res.stdout.count("verify-units: ok:") == 5


def test_cfnd_unit_meets_the_agents_needs() -> None:
    d = _directives(UNITS / "cfnd.service")
    # The documented pip install path (a venv in /opt/cfn), and cfnd's own flags.
    assert d["ExecStart"][0].startswith("/opt/cfn/bin/cfnd ")
    assert d["KillMode"] == ["mixed"]  # agents survive a cfnd crash, are adopted
    assert "MemoryDenyWriteExecute" not in d  # Node-based agents need W+X pages
    assert "PrivateUsers" not in d  # SO_PEERCRED must see the callers' real uids
    assert d["ReadWritePaths"]
    for key in (
        "ProtectClock", "ProtectKernelLogs", "ProtectHostname", "RestrictSUIDSGID",
        "RemoveIPC", "NoNewPrivileges", "ProtectKernelTunables", "PrivateDevices",
    ):  # fmt: skip
        assert d[key] == ["yes"], key
    assert d["ProtectProc"] == ["invisible"]
    assert d["CapabilityBoundingSet"] == [""]
    assert "@system-service" in d["SystemCallFilter"]
    drop_in = _directives(UNITS / "cfnd.service.d" / "external-redis.conf")
    assert drop_in["ReadWritePaths"] and "CFN_REDIS_PASSWORD" not in str(drop_in)
    agent = _directives(UNITS / "cfn-agent@.service")
    assert "--type %i" in agent["ExecStart"][0]
    assert agent["KillMode"] == ["mixed"] and "MemoryDenyWriteExecute" not in agent


def test_a_broken_unit_fails_the_check(tmp_path: Path) -> None:
    units = tmp_path / "units"
    shutil.copytree(UNITS, units)
    unit = units / "cfnd.service"
    unit.write_text(unit.read_text().replace("/opt/cfn/bin/cfnd", "/usr/local/bin/cfnd"))
    res = subprocess.run([str(VERIFY), str(units)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert "/usr/local/bin/cfnd is not executable" in res.stderr
    # And a unit as loose as the old one (5.8 MEDIUM) fails the exposure bound.
    text = (UNITS / "cfnd.service").read_text()
    loose = "\n".join(
        line for line in text.splitlines() if not line.startswith(("Protect", "Restrict", "System"))
    )
    unit.write_text(loose + "\n")
    res = subprocess.run([str(VERIFY), str(units)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert "cfnd.service exposure" in res.stderr and "> 3.0" in res.stderr


def test_cfnd_speaks_sd_notify_ready_watchdog_stopping(
    cfnd_factory: Callable[..., CfndProcess],
) -> None:
    # A real unix datagram socket stands in for systemd's (CfndProcess binds it).
    proc = cfnd_factory("--redis-url", SHARED_REDIS, env={"WATCHDOG_USEC": "200000"})
    assert proc.wait_for("READY=1") == "READY=1"
    assert proc.wait_for("WATCHDOG=1", timeout_s=10) == "WATCHDOG=1"
    assert proc.stop(signal.SIGTERM) == 0
    assert proc.wait_for("STOPPING=1") == "STOPPING=1"


@pytest.mark.parametrize("name", ["cfnd.service", "cfn-agent@.service", "user/cfnd.service"])
def test_units_keep_secrets_out(name: str) -> None:
    text = (UNITS / name).read_text()
    assert not re.search(r"(?i)^Environment=.*(PASSWORD|TOKEN|KEY)=", text, re.M)
