"""The public keys cfnd trusts for each agent's votes and results, pinned in its state dir.

Not in Redis: whoever can write Redis cannot swap a key. A local agent hands its key
to cfnd over a pipe when it starts (``cfn-agent --key-fd``); a remote agent's key is
taken from Redis on first use and pinned from then on (trust on first use).

A local agent's entry is marked *pending* before the agent is spawned, so while its
key is still in the pipe nobody can pin one for it from Redis (the race behind the
vote-forgery flake: a forged key published in Redis was pinned on first use before
the pipe delivered the real one). If the pipe never delivers, the entry is *void*.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
from pathlib import Path
from typing import Literal

import structlog

from cfn_daemon.util.signing import is_public_key

log = structlog.get_logger("cfn.keyring")

_SAFE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
# What a non-key entry holds: a local agent's key is on its way / never came.
PENDING = "pending"
VOID = "void"
KeyState = Literal["pinned", "pending", "void", "none"]


class KeyRing:
    """``state_dir/agent-keys/<swarm>/<agent>`` holds ``ed25519:<hex>``."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "agent-keys"

    def _path(self, swarm: str, agent: str) -> Path | None:
        if not (_SAFE.match(swarm) and _SAFE.match(agent)) or ".." in swarm + agent:
            return None
        return self.root / swarm / agent

    def _read(self, swarm: str, agent: str) -> str | None:
        path = self._path(swarm, agent)
        if path is None:
            return None
        try:
            return path.read_text().strip()
        except OSError:
            return None

    def get(self, swarm: str, agent: str) -> str | None:
        """The pinned public key, or None (none, pending or void)."""
        value = self._read(swarm, agent)
        return value if value is not None and is_public_key(value) else None

    def lookup(self, swarm: str, agent: str) -> tuple[KeyState, str | None]:
        """The entry's state and, when pinned, the key. ``none``: nothing is known of
        the agent (a remote one: its key may be pinned on first use)."""
        value = self._read(swarm, agent)
        if value is None:
            return "none", None
        if is_public_key(value):
            return "pinned", value
        return ("pending", None) if value == PENDING else ("void", None)

    def expect(self, swarm: str, agent: str) -> None:
        """Mark ``agent`` as a local agent whose key comes on its pipe: until then no
        key can be pinned for it on first use. Called before the agent is spawned."""
        self._write(swarm, agent, PENDING, replace=False)

    def void(self, swarm: str, agent: str) -> None:
        """The expected key never came (the agent died first): nothing verifies for
        ``agent`` and nothing can be pinned for it from Redis."""
        self._write(swarm, agent, VOID, replace=True)

    def key_for(self, swarm: str, agent: str, published: str) -> tuple[KeyState, str | None]:
        """What verifies ``agent``'s messages: its pinned key; for an agent nothing is
        known of (a remote one), the key it ``published`` in Redis, pinned now (trust on
        first use). Never a published key for a local agent, pending or not."""
        state, key = self.lookup(swarm, agent)
        if state == "none" and is_public_key(published):
            self.pin(swarm, agent, published, replace=False)
            state, key = self.lookup(swarm, agent)
        return state, key

    def pin(self, swarm: str, agent: str, public: str, *, replace: bool) -> bool:
        """Trust ``public`` for ``agent``; without ``replace`` only if none is pinned."""
        if not is_public_key(public):
            return False
        if self._write(swarm, agent, public, replace=replace):
            return True
        return self.get(swarm, agent) == public

    def _write(self, swarm: str, agent: str, value: str, *, replace: bool) -> bool:
        """Write the entry atomically; without ``replace`` only when there is none."""
        path = self._path(swarm, agent)
        if path is None:
            return False
        # Owner-only all the way down (mkdir's mode does not apply to parents it makes):
        # a task of cfnd's own uid is no less able, but no other uid can read or list it.
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.parent.mkdir(exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{agent}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # atomic: fails when an entry exists already
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return True

    async def pin_from_pipe(self, fd: int, swarm: str, agents: list[str]) -> None:
        """Pin the key a spawned agent writes on its pipe for ``agents`` (its id, and the
        slot it fills); its id's entry is void when none comes."""
        public = await read_key(fd)
        for agent in agents:
            if not self.pin(swarm, agent, public, replace=True):
                log.warning("agent_key_missing", swarm=swarm, agent=agent)
        if not is_public_key(public):
            self.void(swarm, agents[0])  # its messages can never verify

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
