"""The per-agent ACL users of the embedded Redis, kept across its restarts.

The embedded server keeps no ACL file, so users made with ACL SETUSER would be gone
after it restarts (a crash, or a cfnd restart that adopts running agents), and those
agents could not log in again. cfnd therefore records each agent user's rules here,
with the password only as its SHA-256 hash (``#<hex>``, which Redis accepts and which
does not let a reader log in), and the server's config file declares them at every
start. The file is 0600 in the server's 0700 dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import msgspec


def hashed(password: str) -> str:
    """The ACL rule that sets ``password`` without storing it (``#<sha256 hex>``)."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


class AgentUserFile:
    """``{user: [acl rules...]}`` as JSON; every change rewrites it atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, list[str]]:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=dict[str, list[str]])
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return {}

    def add(self, user: str, password: str, rules: list[str]) -> None:
        users = self.load()
        users[user] = [hashed(password), *rules]
        self._save(users)

    def remove(self, user: str) -> None:
        users = self.load()
        if users.pop(user, None) is not None:
            self._save(users)

    def config_lines(self) -> list[str]:
        """``user NAME on #hash RULES...`` lines for the server's config file."""
        return [f"user {user} on {' '.join(rules)}" for user, rules in self.load().items()]

    def _save(self, users: dict[str, list[str]]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(msgspec.json.encode(users))
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
