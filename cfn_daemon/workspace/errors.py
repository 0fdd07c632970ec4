"""The errors of cfn's git workspaces, as part of cfn's one error hierarchy.

Every class takes ``(message, *, details=None, code=None)`` like ``CfnError``, so the
wire layer can rebuild (``CfnError.from_wire``) or copy (``for_op``) them; the extra
keyword arguments only fill ``details``, from which the attributes are read back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from cfn_client.wire.errors import CfnError

__all__ = [
    "STDERR_TAIL",
    "DirtyTreeError",
    "GitError",
    "GitTimeoutError",
    "NotAGitRepoError",
    "UnknownRefError",
    "stderr_tail",
]

STDERR_TAIL = 2000  # chars of git's stderr quoted in an error message (and its details)
DIRTY_SHOWN = 20  # dirty paths named in a DirtyTreeError's message


def stderr_tail(stderr: bytes | str) -> str:
    """The end of git's standard error, decoded and stripped, at most STDERR_TAIL chars."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    text = text.strip()
    return text if len(text) <= STDERR_TAIL else "..." + text[-STDERR_TAIL:]


class GitError(CfnError):
    """A git command failed or a workspace operation was refused.

    ``argv`` is the failing git command (empty for a refusal that ran no command),
    ``returncode`` its exit status (None for a timeout or a refusal) and ``stderr`` its
    decoded standard error. ``details`` holds ``repo`` (the directory git ran in, when
    known), ``argv``, ``returncode`` and the tail of ``stderr``.
    """

    code = "git_failed"

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        stderr: str = "",
        repo: str | os.PathLike[str] | None = None,
        details: dict[str, Any] | None = None,
        code: str | None = None,
    ) -> None:
        merged = dict(details or {})
        if repo is not None:
            merged["repo"] = os.fspath(repo)
        if argv:
            merged["argv"] = list(argv)
        if returncode is not None:
            merged["returncode"] = returncode
        if stderr:
            merged["stderr"] = stderr_tail(stderr)
        super().__init__(message, details=merged, code=code)
        self.argv: list[str] = list(argv) or [str(a) for a in self.details.get("argv", ())]
        self.returncode: int | None = (
            returncode if returncode is not None else self.details.get("returncode")
        )
        self.stderr: str = stderr or str(self.details.get("stderr", ""))


class GitTimeoutError(GitError):
    """A git command ran longer than its timeout and was killed."""

    code = "git_timeout"


class NotAGitRepoError(GitError):
    """The path is not inside a git work tree, or the repository has no commit yet."""

    code = "not_a_git_repo"


class UnknownRefError(GitError):
    """A branch, tag or commit that does not exist."""

    code = "unknown_ref"


class DirtyTreeError(GitError):
    """The worktree has uncommitted changes or untracked files (``dirty_files``)."""

    code = "dirty_tree"

    def __init__(
        self,
        message: str,
        *,
        dirty_files: Sequence[str] = (),
        repo: str | os.PathLike[str] | None = None,
        details: dict[str, Any] | None = None,
        code: str | None = None,
    ) -> None:
        merged = dict(details or {})
        if dirty_files:
            merged["dirty_files"] = list(dirty_files)
        super().__init__(message, repo=repo, details=merged, code=code)
        self.dirty_files: list[str] = [str(p) for p in self.details.get("dirty_files", ())]

    @classmethod
    def at(cls, path: str | os.PathLike[str], dirty: Sequence[str]) -> DirtyTreeError:
        """The error for worktree ``path`` holding the uncommitted paths ``dirty``."""
        shown = ", ".join(dirty[:DIRTY_SHOWN])
        if len(dirty) > DIRTY_SHOWN:
            shown += f" (and {len(dirty) - DIRTY_SHOWN} more)"
        return cls(
            f"{os.fspath(path)} has uncommitted changes: {shown}; commit or stash them first",
            dirty_files=dirty,
            repo=path,
        )
