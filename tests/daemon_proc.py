"""Run the real ``cfnd`` executable in tests and wait for it by sd_notify, not by sleeping."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# The installed console scripts, exactly as users run them.
BIN = Path(sys.executable).parent
CFND = [str(BIN / "cfnd")]
CFNCTL = [str(BIN / "cfnctl")]


@dataclass
class CfndProcess:
    """A ``cfnd`` child process with its own socket, state dir and notify socket."""

    workdir: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    notifications: list[str] = field(default_factory=list)
    #: Where cfnd starts (None: here), and whether to pass it --socket/--state-dir (False:
    #: the config's own paths, as a user's `cfnd --config FILE` has them).
    cwd: Path | None = None
    own_paths: bool = True
    #: The environment's bin dir whose ``cfnd`` runs (None: this test run's own).
    bin_dir: Path | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket = self.workdir / "cfnd.sock"
        self.state_dir = self.workdir / "state"
        self.log_path = self.workdir / "cfnd.log"
        self._notify_path = self.workdir / "notify.sock"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(self._notify_path))

    def start(self, *, wait_ready: bool = True, timeout_s: float = 30.0) -> CfndProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CFN_")}
        env.update(self.env)
        env["NOTIFY_SOCKET"] = str(self._notify_path)
        paths = ["--socket", str(self.socket), "--state-dir", str(self.state_dir)]
        cfnd = [str(self.bin_dir / "cfnd")] if self.bin_dir else CFND
        cmd = [*cfnd, *(paths if self.own_paths else []), "--log-format", "json", *self.args]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT
        )
        if wait_ready:
            self.wait_for("READY=1", timeout_s)
        return self

    def wait_for(self, prefix: str, timeout_s: float = 30.0) -> str:
        """Block until cfnd sends a notification starting with ``prefix``; return it.

        Notifications queued before cfnd exited are still read, so this also works
        for STOPPING=1 after the process is gone.
        """
        deadline = time.monotonic() + timeout_s
        self._notify.settimeout(0.2)
        while True:
            for line in self.notifications:
                if line.startswith(prefix):
                    return line
            try:
                data = self._notify.recv(4096)
            except TimeoutError:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"cfnd exited ({self.proc.returncode}) before {prefix!r}:\n{self.log()}"
                    ) from None
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"cfnd sent no {prefix!r} in {timeout_s}s:\n{self.log()}"
                    ) from None
                continue
            self.notifications += data.decode().splitlines()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> Iterator[dict[str, object]]:
        import json

        for line in self.log().splitlines():
            if line.startswith("{"):
                yield json.loads(line)

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig`` and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            raise AssertionError(
                f"cfnd ignored signal {sig} for {timeout_s}s:\n{self.log()}"
            ) from None
        finally:
            self._log.close()
        return rc

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop(signal.SIGKILL)
        self._notify.close()


def cfnctl(
    socket_path: Path, *args: str, env: Mapping[str, str] | None = None, timeout_s: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run the real cfnctl against ``socket_path``."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CFN_")}
    full_env.update(env or {})
    return subprocess.run(
        [*CFNCTL, "--socket", str(socket_path), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout_s,
        check=False,
    )
