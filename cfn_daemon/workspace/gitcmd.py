"""Running git for cfn's workspaces: the subprocess runner and small repository queries.

Each implementer of a CFN-loop run works in its own linked worktree on its own branch
(``worktrees``); cfn merges the branches into a candidate branch and diffs it for the
validators (``merge``), and finally brings the result into the user's branch (``apply``).
This module is the layer all of them run git through.

Ground rules every workspace function follows:

* git runs as ``git -C <dir> ...`` from an argv list (never a shell), with
  ``GIT_TERMINAL_PROMPT=0`` and ``LC_ALL=C``, and every call has a timeout after which
  the process is killed (``timeout_s`` applies to each git invocation, not per function).
* The user's own working tree and current branch are never touched, except by the
  ``apply_*`` functions whose whole point is to change them (and which refuse a dirty
  tree). Functions that rewrite a tree (``commit_all``, ``reset_worktree_to``, the merge
  worktree of ``merge_into``) refuse to run in a repository's main worktree.
* Creating things is idempotent, so a restarted daemon reuses the worktrees and branches
  of its previous life instead of failing or duplicating them.

Requires git >= 2.31 (``rev-parse --path-format``). The names not in ``__all__``
(``run_git``, ``require_clean``...) are shared by the workspace modules only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import Mapping
from pathlib import Path

import msgspec
import structlog

from cfn_daemon.workspace.errors import (
    DirtyTreeError,
    GitError,
    GitTimeoutError,
    NotAGitRepoError,
    UnknownRefError,
    stderr_tail,
)

__all__ = [
    "CFN_IDENTITY",
    "DEFAULT_TIMEOUT_S",
    "Identity",
    "current_branch",
    "dirty_files",
    "is_clean",
    "is_git_repo",
    "resolve_ref",
    "validate_repo",
]

log = structlog.get_logger("cfn.workspace")

StrPath = str | os.PathLike[str]

DEFAULT_TIMEOUT_S = 60.0
KILL_LINGER_S = 5.0  # how long a killed git's pipes may stay open


# Variables that would redirect ``git -C`` to some other repository or index (they are set
# when cfnd happens to be started from inside a git hook, for instance).
_SCRUBBED_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)

# Per-invocation config, so nothing depends on (or changes) the user's git config:
# no auto-gc inside our timeout budget, no gpg prompt for cfn's commits, standard conflict
# markers (no diff3 base section) and no rerere replaying old resolutions into our merges.
_CONFIG = (
    "-c",
    "gc.auto=0",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "merge.conflictStyle=merge",
    "-c",
    "rerere.enabled=false",
    "-c",
    "core.quotePath=false",
)


# ---------------------------------------------------------------------------- identity


class Identity(msgspec.Struct, frozen=True):
    """Author and committer of a commit cfn makes."""

    name: str
    email: str


CFN_IDENTITY = Identity(name="cfn", email="cfn@localhost")


# ---------------------------------------------------------------------------- runner


class GitOutput(msgspec.Struct, frozen=True):
    """What a finished git command returned."""

    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace").strip()


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
        # Never wait on an editor or pager; every message is given on the command line.
        GIT_EDITOR="true",
        GIT_SEQUENCE_EDITOR="true",
        GIT_PAGER="cat",
    )
    if extra:
        env.update(extra)
    return env


def identity_env(identity: Identity | None) -> dict[str, str]:
    """Environment making ``identity`` author and committer (empty: git config decides)."""
    if identity is None:
        return {}
    return {
        "GIT_AUTHOR_NAME": identity.name,
        "GIT_AUTHOR_EMAIL": identity.email,
        "GIT_COMMITTER_NAME": identity.name,
        "GIT_COMMITTER_EMAIL": identity.email,
    }


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    # git runs as a session leader, so this also reaches the hooks, ssh or pack-objects it
    # started, which would otherwise keep running (and hold our pipes and its locks).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _stderr_of(talk: asyncio.Future[tuple[bytes, bytes]]) -> bytes:
    # What a killed git wrote to stderr, if its pipes closed in time to collect it.
    if talk.done() and not talk.cancelled() and talk.exception() is None:
        return talk.result()[1]
    return b""


async def run_git(
    cwd: StrPath,
    *args: str,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    check: bool = True,
) -> GitOutput:
    """Run ``git -C cwd args``; raise GitError on a non-zero exit when ``check``.

    A timeout kills git's whole process group and raises GitTimeoutError.
    """
    where = os.fspath(cwd)
    argv = ["git", "-C", where, *_CONFIG, *args]
    shown = shlex.join(["git", "-C", where, *args])
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_env(env),
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise GitError(
            f"cannot run `{shown}`: git is not installed (no `git` on cfnd's PATH); "
            "install git >= 2.31 and restart cfnd",
            argv=argv,
            repo=where,
        ) from exc
    talk = asyncio.ensure_future(proc.communicate(stdin))
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await asyncio.shield(talk)
    except TimeoutError:
        _kill_group(proc)
        # The pipes reach EOF once every process holding them is dead; waiting for that
        # means no straggler outlives the error (one that escaped the group is let go).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(KILL_LINGER_S):
                await asyncio.shield(talk)
        talk.cancel()
        partial = _stderr_of(talk)
        tail = stderr_tail(partial)
        raise GitTimeoutError(
            f"`{shown}` did not finish within {timeout_s:g}s and was killed"
            + (f": {tail}" if tail else "")
            + "; a hook, a lock held by another git process or a slow filesystem in "
            f"{where} may be holding it up: check those, then retry",
            argv=argv,
            stderr=partial.decode("utf-8", "replace"),
            repo=where,
        ) from None
    except BaseException:
        # Cancelled: do not leave git running (and holding its lock files) behind us.
        _kill_group(proc)
        talk.cancel()
        raise
    rc = proc.returncode
    assert rc is not None  # communicate() returned, so the process has exited
    if check and rc != 0:
        tail = stderr_tail(err)
        raise GitError(
            f"`{shown}` failed in {where} with exit status {rc}"
            + (f": {tail}" if tail else " (no error output)")
            + "; fix what git reports (running the command there shows it again), then retry",
            argv=argv,
            returncode=rc,
            stderr=err.decode("utf-8", "replace"),
            repo=where,
        )
    return GitOutput(rc, out, err)


def is_dir(path: StrPath) -> bool:
    """True if ``path`` is an existing directory."""
    return os.path.isdir(path)


def absolute_path(path: StrPath) -> Path:
    """``path`` made absolute (not resolved: symlinks stay)."""
    return Path(os.path.abspath(path))


def same_path(a: StrPath, b: StrPath) -> bool:
    """True if ``a`` and ``b`` name the same place once symlinks are resolved."""
    return os.path.realpath(a) == os.path.realpath(b)


def split_z(data: bytes) -> list[str]:
    """The paths of a NUL-separated (``-z``) git listing."""
    return [p.decode("utf-8", "surrogateescape") for p in data.split(b"\0") if p]


# ---------------------------------------------------------------------------- repo & refs


async def is_git_repo(path: StrPath, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True if ``path`` exists and lies inside a git work tree (bare repositories: False)."""
    if not is_dir(path):
        return False
    out = await run_git(
        path, "rev-parse", "--is-inside-work-tree", timeout_s=timeout_s, check=False
    )
    return out.returncode == 0 and out.text == "true"


async def validate_repo(path: StrPath, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Path:
    """The top-level directory of the work tree at ``path``.

    Raises NotAGitRepoError if ``path`` is not in a git work tree or the repository has
    no commit yet (worktrees and branches need a commit to start from).
    """
    if not is_dir(path):
        raise NotAGitRepoError(
            f"{os.fspath(path)} is not a directory; give the path of a git checkout", repo=path
        )
    out = await run_git(path, "rev-parse", "--show-toplevel", timeout_s=timeout_s, check=False)
    if out.returncode != 0 or not out.text:
        raise NotAGitRepoError(
            f"{os.fspath(path)} is not inside a git work tree: {stderr_tail(out.stderr)}; "
            "give the path of a git checkout (or run `git init` there first)",
            returncode=out.returncode,
            stderr=out.stderr.decode("utf-8", "replace"),
            repo=path,
        )
    top = Path(out.text)
    head = await run_git(
        path, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", timeout_s=timeout_s, check=False
    )
    if head.returncode != 0:
        raise NotAGitRepoError(
            f"the git repository at {top} has no commits yet; make an initial commit first",
            repo=top,
        )
    return top


async def resolve_ref(repo: StrPath, ref: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """The commit sha ``ref`` names (a branch, tag, sha, ``HEAD``...)."""
    out = await run_git(
        repo,
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        f"{ref}^{{commit}}",
        timeout_s=timeout_s,
        check=False,
    )
    if out.returncode != 0 or not out.text:
        raise UnknownRefError(
            f"{ref!r} does not name a commit in {os.fspath(repo)}; check the branch, tag or "
            "sha (`git branch --list`, `git log`), or fetch it if it is only on a remote",
            returncode=out.returncode,
            repo=repo,
        )
    return out.text


async def branch_sha(repo: StrPath, branch: str, *, timeout_s: float) -> str | None:
    """The tip of local branch ``branch``, or None if there is no such branch."""
    out = await run_git(
        repo,
        "rev-parse",
        "--verify",
        "--quiet",
        f"refs/heads/{branch}^{{commit}}",
        timeout_s=timeout_s,
        check=False,
    )
    return out.text if out.returncode == 0 and out.text else None


async def check_branch_name(repo: StrPath, branch: str, *, timeout_s: float) -> None:
    """Raise GitError unless ``branch`` is a valid name for a new local branch."""
    # Checked as a full ref name: `check-ref-format --branch` would expand "-" and @{-1}.
    out = await run_git(
        repo, "check-ref-format", f"refs/heads/{branch}", timeout_s=timeout_s, check=False
    )
    if out.returncode != 0 or branch.startswith("-"):
        raise GitError(
            f"{branch!r} is not a valid git branch name (see `git check-ref-format`); use "
            "one without spaces, '..', '~', '^', ':', '?', '*', '[' or a leading '-'",
            repo=repo,
        )


async def current_branch(path: StrPath, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
    """The branch checked out at ``path`` (short name), or None when HEAD is detached."""
    out = await run_git(
        path, "symbolic-ref", "--quiet", "--short", "HEAD", timeout_s=timeout_s, check=False
    )
    if out.returncode == 0:
        return out.text
    if out.returncode == 1:
        return None
    raise GitError(
        f"cannot read HEAD of {os.fspath(path)}: {stderr_tail(out.stderr)}; "
        "check the repository with `git status` there",
        returncode=out.returncode,
        stderr=out.stderr.decode("utf-8", "replace"),
        repo=path,
    )


# ---------------------------------------------------------------------------- status


async def dirty_files(path: StrPath, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """Paths with uncommitted changes at ``path``, untracked files included (ignored not)."""
    out = await run_git(
        path,
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=normal",
        timeout_s=timeout_s,
        # A read-only look must not take index.lock under a user's concurrent git command.
        env={"GIT_OPTIONAL_LOCKS": "0"},
    )
    return [entry.path for entry in parse_status(out.stdout)]


async def is_clean(path: StrPath, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True if the worktree has no uncommitted changes and no untracked files."""
    return not await dirty_files(path, timeout_s=timeout_s)


class StatusEntry(msgspec.Struct, frozen=True):
    """One path of ``git status --porcelain=v1``: its two-letter code and its path."""

    code: str
    path: str


def parse_status(data: bytes) -> list[StatusEntry]:
    """The entries of ``git status --porcelain=v1 -z`` output."""
    fields = data.split(b"\0")
    entries: list[StatusEntry] = []
    i = 0
    while i < len(fields):
        field = fields[i]
        i += 1
        if len(field) < 4:
            continue
        code = field[:2].decode("ascii", "replace")
        entries.append(StatusEntry(code, field[3:].decode("utf-8", "surrogateescape")))
        if "R" in code or "C" in code:
            i += 1  # a rename or copy is followed by its original path
    return entries


async def require_clean(path: StrPath, *, timeout_s: float) -> None:
    """Raise DirtyTreeError if the worktree at ``path`` has uncommitted changes."""
    dirty = await dirty_files(path, timeout_s=timeout_s)
    if dirty:
        raise DirtyTreeError.at(path, dirty)


async def require_linked_worktree(path: StrPath, *, timeout_s: float) -> None:
    """Raise GitError if ``path`` is a repository's main worktree (the user's checkout)."""
    # The main worktree is the user's checkout; in a linked one the git dir is a
    # subdirectory of the common dir rather than the common dir itself.
    out = await run_git(
        path,
        "rev-parse",
        "--path-format=absolute",
        "--git-dir",
        "--git-common-dir",
        timeout_s=timeout_s,
    )
    lines = out.text.splitlines()
    if len(lines) != 2 or same_path(lines[0], lines[1]):
        raise GitError(
            f"{os.fspath(path)} is a repository's main worktree, not one cfn created; "
            "refusing to rewrite it (give the path of a worktree cfn made)",
            repo=path,
        )
