"""Explain socket problems: the messages behind exit codes 3 and 4, and doctor's local checks.

Connection errors and ``cfnctl doctor`` share these texts so the advice a user
gets is the same whichever command hit the problem.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from pathlib import Path

from cfn_client.wire.errors import CfnError, DaemonUnreachable, PermissionDenied, RequestTimeout
from cfn_client.wire.schema.system import Check

START_HINT = (
    "start cfnd with `cfnd` (or `systemctl start cfnd` where it is installed as a service); "
    "pass --socket PATH or set CFN_SOCKET to use another socket"
)

_REASONS = {
    errno.ENOENT: "no such socket (is cfnd running?)",
    errno.ECONNREFUSED: "connection refused (a stale socket: cfnd is not running)",
    errno.ENOTDIR: "a parent of the socket path is not a directory",
    errno.ENOTSOCK: "the path is not a socket",
}


def unreachable(path: Path, reason: str) -> DaemonUnreachable:
    """The exit-3 error: what failed at which socket, and how to start cfnd."""
    return DaemonUnreachable(
        f"cannot reach cfnd at {path}: {reason}; {START_HINT}",
        details={"socket": str(path), "reason": reason},
    )


def permission_denied(path: Path) -> PermissionDenied:
    """The exit-4 error: which socket refused us, why, and which group to join."""
    problem, fix = permission_advice(path)
    return PermissionDenied(
        f"permission denied connecting to cfnd at {path}: {problem}; {fix}",
        details={"socket": str(path), "fix": fix},
    )


def connect_error(exc: OSError, path: Path) -> CfnError:
    """Map a failed ``connect()`` on the Unix socket to the matching ``CfnError``."""
    if isinstance(exc, TimeoutError):
        return RequestTimeout(
            f"timed out connecting to cfnd at {path}: its accept queue is full "
            "(the daemon is overloaded or hung); retry, or check `systemctl status cfnd`",
            details={"socket": str(path)},
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return permission_denied(path)
    if exc.errno == errno.ECONNREFUSED:
        # Linux refuses connects to non-sockets too: name what is really there.
        kind = _kind_at(path)
        if kind != "socket":
            return unreachable(path, f"the path is a {kind}, not a socket")
    reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
    return unreachable(path, reason)


def permission_advice(path: Path) -> tuple[str, str]:
    """Why we may not connect to ``path``, and the fix: join its group, or fix a directory."""
    try:
        st = os.stat(path)
    except OSError:
        # The socket itself cannot even be looked up: a directory on the way blocks us.
        return (
            f"you cannot search a directory on the way to the socket ({path.parent})",
            "ask an admin to make that directory accessible to the socket's group",
        )
    group, user = _group_name(st.st_gid), _user_name(os.getuid())
    return (
        f"the socket is {stat.filemode(st.st_mode)} {_user_name(st.st_uid)}:{group}; "
        f"your user ({user}) must be in the socket's group {group}",
        f"`sudo usermod -aG {group} {user}`, then log in again",
    )


def socket_checks(path: Path) -> tuple[list[Check], CfnError | None]:
    """Checks that need no daemon: the socket exists, is a socket, and we may connect.

    Returns the checks run (stopping at the first failure) and, on failure, the
    error a connection attempt would raise, so ``doctor`` can exit with its code.
    """
    err: CfnError
    try:
        st = os.stat(path)
    except FileNotFoundError:
        err = unreachable(path, "no such socket (is cfnd running?)")
        return [_fail("socket.exists", f"no file at {path}", START_HINT)], err
    except PermissionError:
        err = permission_denied(path)
        return [_fail("socket.exists", *permission_advice(path))], err
    except OSError as exc:
        err = connect_error(exc, path)
        return [_fail("socket.exists", err.message, START_HINT)], err
    checks = [Check(name="socket.exists", ok=True, detail=str(path))]
    if not stat.S_ISSOCK(st.st_mode):
        err = unreachable(path, "the path exists but is not a socket")
        detail = f"{path} is a {_kind(st.st_mode)}, not a socket"
        fix = "point --socket or CFN_SOCKET at cfnd's socket"
        if stat.S_ISREG(st.st_mode):
            fix += (
                f" (or, if cfnd should listen here, remove the stale file {path} and restart cfnd)"
            )
        return [*checks, _fail("socket.type", detail, fix)], err
    checks.append(Check(name="socket.type", ok=True, detail=stat.filemode(st.st_mode)))
    # Connecting needs write permission on the socket file (search on the dirs we already had).
    if not os.access(path, os.W_OK):
        err = permission_denied(path)
        return [*checks, _fail("socket.access", *permission_advice(path))], err
    owner = f"{_user_name(st.st_uid)}:{_group_name(st.st_gid)}"
    checks.append(Check(name="socket.access", ok=True, detail=f"writable by us ({owner})"))
    return checks, None


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, ok=False, detail=detail, fix=fix)


def _kind_at(path: Path) -> str:
    try:
        return _kind(os.stat(path).st_mode)
    except OSError:
        return "socket"  # vanished or unreadable: keep the errno's own explanation


def _kind(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "regular file"
    return "special file"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
