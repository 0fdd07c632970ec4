"""The current swarm, as kubectl has a current context: a small file per user.

``$CFN_CONTEXT_FILE``, else ``$XDG_CONFIG_HOME/cfn/context.json``, else
``~/.config/cfn/context.json``. It maps each daemon's socket path to the swarm
last initialised (``swarm init``) or chosen (``swarm use``) on it, so two daemons'
swarms never mix. Written atomically (temp file + rename); a missing or damaged
file simply means "no current swarm".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

__all__ = ["ContextFile", "context_path", "current_swarm", "forget_swarm", "use_swarm"]


class ContextFile(msgspec.Struct, kw_only=True):
    """``context.json``: the current swarm of each daemon, by its socket path."""

    version: int = 1
    current: dict[str, str] = {}


def context_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the context file lives (it may not exist yet)."""
    env = os.environ if environ is None else environ
    if env.get("CFN_CONTEXT_FILE"):
        return Path(env["CFN_CONTEXT_FILE"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cfn" / "context.json"


def _key(socket: Path) -> str:
    return str(socket.absolute())


def _load(path: Path) -> ContextFile:
    try:
        return msgspec.json.decode(path.read_bytes(), type=ContextFile)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return ContextFile()  # none yet, or damaged: no current swarm (rewritten on use)


def _save(path: Path, ctx: ContextFile) -> None:
    import tempfile  # only when the file is written (`swarm init`, `swarm use`)

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".context-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(msgspec.json.format(msgspec.json.encode(ctx)) + b"\n")
        os.replace(tmp, path)  # readers see the old file or the new one, never half
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def current_swarm(socket: Path, path: Path | None = None) -> str | None:
    """The current swarm recorded for the daemon at ``socket``, if any."""
    return _load(path or context_path()).current.get(_key(socket))


def use_swarm(socket: Path, swarm: str, path: Path | None = None) -> Path:
    """Make ``swarm`` the current one of the daemon at ``socket``; returns the file."""
    path = path or context_path()
    ctx = _load(path)
    ctx.current[_key(socket)] = swarm
    _save(path, ctx)
    return path


def forget_swarm(socket: Path, swarm: str, path: Path | None = None) -> None:
    """No current swarm for ``socket`` any more, if it was ``swarm`` (it was destroyed)."""
    path = path or context_path()
    ctx = _load(path)
    if ctx.current.get(_key(socket)) == swarm:
        del ctx.current[_key(socket)]
        _save(path, ctx)
