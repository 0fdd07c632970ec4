"""The public keys cfnd trusts for each agent's votes, pinned in its state dir.

Not in Redis: whoever can write Redis cannot swap a key. A local agent hands its key
to cfnd over a pipe when it starts (``cfn-agent --key-fd``); a remote agent's key is
taken from Redis on first use and pinned from then on (trust on first use).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
from pathlib import Path

from cfn_daemon.util.signing import is_public_key

_SAFE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


class KeyRing:
    """``state_dir/agent-keys/<swarm>/<agent>`` holds ``ed25519:<hex>``."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "agent-keys"

    def _path(self, swarm: str, agent: str) -> Path | None:
        if not (_SAFE.match(swarm) and _SAFE.match(agent)) or ".." in swarm + agent:
            return None
        return self.root / swarm / agent

    def get(self, swarm: str, agent: str) -> str | None:
        path = self._path(swarm, agent)
        if path is None:
            return None
        try:
            value = path.read_text().strip()
        except OSError:
            return None
        return value if is_public_key(value) else None

    def pin(self, swarm: str, agent: str, public: str, *, replace: bool) -> bool:
        """Trust ``public`` for ``agent``; without ``replace`` only if none is pinned."""
        path = self._path(swarm, agent)
        if path is None or not is_public_key(public):
            return False
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{agent}.{os.getpid()}.tmp")
        tmp.write_text(public + "\n")
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # atomic: fails when a key is pinned already
        except FileExistsError:
            return self.get(swarm, agent) == public
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return True

    def forget_swarm(self, swarm: str) -> None:
        path = self._path(swarm, "x")
        if path is None:
            return
        for f in path.parent.glob("*"):
            with contextlib.suppress(OSError):
                f.unlink()


async def read_key(fd: int) -> str:
    """The public key a starting agent writes on its pipe (``--key-fd``): bounded, it
    writes it first thing, and EOF comes when it exits. ``fd`` is closed."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1024)
    pipe = os.fdopen(fd, "rb", buffering=0)
    raw = b""
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
    except OSError:
        pipe.close()
        return ""
    try:
        raw = await asyncio.wait_for(reader.readline(), 60.0)
    except (OSError, TimeoutError, ValueError):
        pass
    finally:
        transport.close()
    return raw.decode("ascii", "replace").strip()


def task_user(configured: str | None) -> str | None:
    """Who tasks run as when cfnd is root: ``[agents] run_as``, else ``cfn-task`` when
    that user exists; None when cfnd is not root or nobody is configured."""
    if os.geteuid() != 0 or configured == "":
        return None
    if configured:
        return configured
    try:
        pwd.getpwnam("cfn-task")
    except KeyError:
        return None
    return "cfn-task"
