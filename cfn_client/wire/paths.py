"""Default filesystem locations shared by cfnd and cfnctl (no I/O at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

SYSTEM_SOCKET = Path("/run/cfn/cfnd.sock")
SYSTEM_STATE_DIR = Path("/var/lib/cfn")


def default_socket_path(env: Mapping[str, str] | None = None) -> Path:
    """``$CFN_SOCKET``; else ``/run/cfn/cfnd.sock`` as root, ``$XDG_RUNTIME_DIR/cfn/cfnd.sock``
    for a user (``/tmp/cfn-<uid>/cfnd.sock`` when XDG_RUNTIME_DIR is unset)."""
    env = os.environ if env is None else env
    if env.get("CFN_SOCKET"):
        return Path(env["CFN_SOCKET"])
    if os.geteuid() == 0:
        return SYSTEM_SOCKET
    runtime = env.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path(f"/tmp/cfn-{os.geteuid()}")
    return base / "cfn" / "cfnd.sock"


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$CFN_STATE_DIR``; else ``/var/lib/cfn`` as root, ``$XDG_STATE_HOME/cfn`` for a user."""
    env = os.environ if env is None else env
    if env.get("CFN_STATE_DIR"):
        return Path(env["CFN_STATE_DIR"])
    if os.geteuid() == 0:
        return SYSTEM_STATE_DIR
    state = env.get("XDG_STATE_HOME")
    base = Path(state) if state else Path.home() / ".local" / "state"
    return base / "cfn"
