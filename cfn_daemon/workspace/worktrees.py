"""cfn's worktrees and branches: creating, resetting, removing them, and committing in them.

Each implementer works in a linked worktree on its own branch (``ensure_worktree``), cfn
commits what it left there (``commit_all``), and validators get a detached, read-only
worktree of the commit they review (``add_detached_worktree``).
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import msgspec

from cfn_daemon.workspace.errors import GitError, stderr_tail
from cfn_daemon.workspace.gitcmd import (
    DEFAULT_TIMEOUT_S,
    Identity,
    StrPath,
    absolute_path,
    branch_sha,
    check_branch_name,
    identity_env,
    is_dir,
    log,
    require_clean,
    require_linked_worktree,
    resolve_ref,
    run_git,
    same_path,
    validate_repo,
)

__all__ = [
    "SUMMARY_MAX",
    "WorktreeInfo",
    "add_detached_worktree",
    "commit_all",
    "delete_branches",
    "ensure_worktree",
    "format_commit_message",
    "list_branches",
    "list_worktrees",
    "remove_worktree",
    "reset_worktree_to",
]

SUMMARY_MAX = 72  # the conventional width of a commit summary line


class WorktreeInfo(msgspec.Struct, frozen=True):
    """One entry of ``git worktree list``."""

    path: str
    head: str | None
    branch: str | None  # short name; None when detached (or bare)
    detached: bool = False
    bare: bool = False
    locked: str | None = None  # the lock reason ("" when locked without one)
    prunable: bool = False


# ---------------------------------------------------------------------------- worktrees


async def list_worktrees(
    repo: StrPath, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[WorktreeInfo]:
    """Every worktree registered in the repository, the main one first."""
    out = await run_git(repo, "worktree", "list", "--porcelain", timeout_s=timeout_s)
    result: list[WorktreeInfo] = []
    for block in out.stdout.decode("utf-8", "surrogateescape").split("\n\n"):
        attrs: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(" ")
            attrs[key] = value
        if "worktree" not in attrs:
            continue
        branch = attrs.get("branch")
        result.append(
            WorktreeInfo(
                path=attrs["worktree"],
                head=attrs.get("HEAD"),
                branch=branch.removeprefix("refs/heads/") if branch else None,
                detached="detached" in attrs,
                bare="bare" in attrs,
                locked=attrs.get("locked"),
                prunable="prunable" in attrs or not is_dir(attrs["worktree"]),
            )
        )
    return result


async def _find_worktree(repo: StrPath, path: StrPath, *, timeout_s: float) -> WorktreeInfo | None:
    for wt in await list_worktrees(repo, timeout_s=timeout_s):
        if same_path(wt.path, path):
            return wt
    return None


async def _drop_registration(repo: StrPath, wt: WorktreeInfo, *, timeout_s: float) -> None:
    # `worktree remove` clears just this stale entry; `worktree prune` would also drop the
    # user's own worktrees that merely sit on an unmounted disk.
    out = await run_git(
        repo, "worktree", "remove", "--force", "--force", wt.path, timeout_s=timeout_s, check=False
    )
    if out.returncode != 0:
        await run_git(repo, "worktree", "prune", timeout_s=timeout_s)
    log.info("workspace_stale_worktree_dropped", repo=os.fspath(repo), path=wt.path)


def _is_half_created(wt: WorktreeInfo) -> bool:
    # `git worktree add` locks the new worktree as "initializing" until its checkout is
    # done; a daemon killed in between leaves that lock (and a partial checkout) behind.
    return wt.locked is not None and "initializing" in wt.locked


def _check_path_free(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise GitError(
            f"{path} already exists and is not a worktree of this repository; "
            "remove it or choose another worktree path",
            repo=path,
        )


async def ensure_worktree(
    repo: StrPath,
    path: StrPath,
    branch: str,
    start_ref: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> str:
    """Make ``path`` a worktree of ``repo`` with ``branch`` checked out; return its HEAD sha.

    The branch is created at ``start_ref`` if it does not exist yet; an existing branch is
    reused as it is (it may hold a previous life's commits), and so is an existing
    worktree at ``path`` on that branch. A registration whose directory was deleted is
    dropped and the worktree recreated. ``path``'s parents are created as needed; put it
    outside the user's work tree, or it shows up in their ``git status``.
    """
    await validate_repo(repo, timeout_s=timeout_s)
    await check_branch_name(repo, branch, timeout_s=timeout_s)
    target = absolute_path(path)
    for wt in await list_worktrees(repo, timeout_s=timeout_s):
        here = same_path(wt.path, target)
        if wt.branch == branch and not here:
            if wt.prunable:
                await _drop_registration(repo, wt, timeout_s=timeout_s)
                continue
            raise GitError(
                f"branch {branch!r} is already checked out at {wt.path} (git checks a branch "
                "out in one worktree only); remove that worktree first",
                repo=repo,
            )
        if not here:
            continue
        if wt.prunable or _is_half_created(wt):
            await _drop_registration(repo, wt, timeout_s=timeout_s)
        elif wt.branch == branch:
            log.debug("workspace_worktree_reused", path=str(target), branch=branch)
            return await resolve_ref(target, "HEAD", timeout_s=timeout_s)
        else:
            on = f"branch {wt.branch!r}" if wt.branch else "a detached HEAD"
            raise GitError(
                f"{target} is already a worktree on {on}, not on {branch!r}; "
                "remove it or choose another worktree path",
                repo=repo,
            )
    _check_path_free(target)
    if await branch_sha(repo, branch, timeout_s=timeout_s) is not None:
        await run_git(repo, "worktree", "add", "--quiet", str(target), branch, timeout_s=timeout_s)
    else:
        start = await resolve_ref(repo, start_ref, timeout_s=timeout_s)
        # Starting from a sha (not a remote branch name) keeps the branch free of upstream
        # tracking config.
        await run_git(
            repo,
            "worktree",
            "add",
            "--quiet",
            "-b",
            branch,
            str(target),
            start,
            timeout_s=timeout_s,
        )
    log.info("workspace_worktree_created", path=str(target), branch=branch)
    return await resolve_ref(target, "HEAD", timeout_s=timeout_s)


async def reset_worktree_to(
    path: StrPath, ref: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> str:
    """Move the branch checked out in cfn's worktree ``path`` to ``ref``; return the sha.

    Refuses (DirtyTreeError) while the worktree holds uncommitted work, so an agent's
    changes are never thrown away: ``commit_all`` them first.
    """
    await require_linked_worktree(path, timeout_s=timeout_s)
    await require_clean(path, timeout_s=timeout_s)
    sha = await resolve_ref(path, ref, timeout_s=timeout_s)
    await run_git(path, "reset", "--hard", "--quiet", sha, timeout_s=timeout_s)
    return sha


async def add_detached_worktree(
    repo: StrPath, path: StrPath, commit: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> str:
    """A worktree at ``path`` with ``commit`` checked out (detached), files read-only.

    For validators, who must not edit what they review: every file's write bits are
    cleared (directories stay writable so test caches still work; ``.git`` is left
    alone). Idempotent; an existing detached worktree at ``path`` on another commit is
    recreated. Returns the commit's sha.
    """
    await validate_repo(repo, timeout_s=timeout_s)
    sha = await resolve_ref(repo, commit, timeout_s=timeout_s)
    target = absolute_path(path)
    wt = await _find_worktree(repo, target, timeout_s=timeout_s)
    if wt is not None and (wt.prunable or _is_half_created(wt)):
        await _drop_registration(repo, wt, timeout_s=timeout_s)
        wt = None
    if wt is not None and wt.branch is not None:
        raise GitError(
            f"{target} is a worktree on branch {wt.branch!r}, not a detached one; "
            "remove it or choose another path for the review worktree",
            repo=repo,
        )
    if wt is not None and wt.head != sha:
        await run_git(repo, "worktree", "remove", "--force", str(target), timeout_s=timeout_s)
        wt = None
    if wt is None:
        _check_path_free(target)
        await run_git(
            repo, "worktree", "add", "--quiet", "--detach", str(target), sha, timeout_s=timeout_s
        )
        log.info("workspace_review_worktree_created", path=str(target), commit=sha)
    await asyncio.to_thread(_make_files_read_only, target)
    return sha


def _make_files_read_only(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        if ".git" in dirnames:
            dirnames.remove(".git")
        for name in filenames:
            if name == ".git":
                continue
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            # chmod follows symlinks, and a link may point outside the worktree.
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o222:
                os.chmod(full, stat.S_IMODE(st.st_mode) & ~0o222)


async def remove_worktree(
    repo: StrPath, path: StrPath, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> bool:
    """Force-remove cfn's worktree at ``path`` (its branch stays); False if it was gone.

    A registration whose directory was already deleted is cleared. A directory at
    ``path`` that git does not know as a worktree is left alone.
    """
    worktrees = await list_worktrees(repo, timeout_s=timeout_s)
    wt = next((w for w in worktrees if same_path(w.path, path)), None)
    if wt is None:
        return False
    if wt is worktrees[0]:
        raise GitError(
            f"{wt.path} is the repository's main worktree; refusing to remove it", repo=repo
        )
    await run_git(repo, "worktree", "remove", "--force", "--force", wt.path, timeout_s=timeout_s)
    log.info("workspace_worktree_removed", path=wt.path)
    return True


# ---------------------------------------------------------------------------- branches


async def list_branches(
    repo: StrPath, prefix: str = "", *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[str]:
    """Local branches under ``prefix`` (a path prefix: ``cfn/r1`` matches ``cfn/r1/a``,
    not ``cfn/r10``), sorted; an empty prefix lists every branch."""
    pattern = "refs/heads/" + prefix.strip("/") if prefix.strip("/") else "refs/heads/"
    out = await run_git(
        repo, "for-each-ref", "--format=%(refname)", "--", pattern, timeout_s=timeout_s
    )
    names = [line.removeprefix("refs/heads/") for line in out.text.splitlines() if line]
    return sorted(names)


async def delete_branches(
    repo: StrPath, prefix: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[str]:
    """Force-delete the local branches under ``prefix`` (see ``list_branches``).

    Returns the deleted names. Branches checked out in some worktree are left alone and,
    once the others are gone, reported by a GitError (remove those worktrees first).
    """
    if not prefix.strip("/"):
        raise GitError(
            "refusing to delete branches with an empty prefix (that is all of them)", repo=repo
        )
    names = await list_branches(repo, prefix, timeout_s=timeout_s)
    checked_out: dict[str, str] = {}
    for wt in await list_worktrees(repo, timeout_s=timeout_s):
        if wt.branch in names and wt.prunable:
            await _drop_registration(repo, wt, timeout_s=timeout_s)  # its directory is gone
        elif wt.branch:
            checked_out[wt.branch] = wt.path
    busy = [n for n in names if n in checked_out]
    doomed = [n for n in names if n not in checked_out]
    if doomed:
        await run_git(repo, "branch", "-D", "--", *doomed, timeout_s=timeout_s)
        log.info("workspace_branches_deleted", repo=os.fspath(repo), branches=doomed)
    if busy:
        where = ", ".join(f"{n} (at {checked_out[n]})" for n in busy)
        raise GitError(
            f"not deleting branches checked out in a worktree: {where}; "
            "remove those worktrees first",
            repo=repo,
        )
    return doomed


# ---------------------------------------------------------------------------- commits


def format_commit_message(message: str, *, limit: int = SUMMARY_MAX) -> str:
    """A commit message whose summary line fits in ``limit`` chars.

    An overlong first line is shortened with "..." and kept whole at the top of the body.
    """
    lines = message.strip().splitlines()
    if not lines:
        return "cfn: update\n"
    first = " ".join(lines[0].split())
    body = "\n".join(lines[1:]).strip("\n")
    summary = first
    if len(first) > limit:
        summary = first[: limit - 3].rstrip() + "..."
        body = f"{first}\n\n{body}" if body.strip() else first
    return f"{summary}\n\n{body}\n" if body.strip() else f"{summary}\n"


async def commit_staged(
    path: StrPath,
    message: str,
    *,
    identity: Identity | None,
    verify: bool,
    timeout_s: float,
) -> str:
    """Commit the index at ``path`` with ``message`` as given; return the new HEAD."""
    args = ["commit", "--quiet", "--cleanup=whitespace", "--file=-"]
    if not verify:
        args.append("--no-verify")
    # "--cleanup=whitespace": the default "strip" would drop message lines starting with #.
    await run_git(
        path,
        *args,
        timeout_s=timeout_s,
        env=identity_env(identity),
        stdin=message.encode("utf-8"),
    )
    return await resolve_ref(path, "HEAD", timeout_s=timeout_s)


async def has_staged_changes(path: StrPath, *, timeout_s: float) -> bool:
    """True if the index at ``path`` differs from HEAD."""
    out = await run_git(path, "diff", "--cached", "--quiet", timeout_s=timeout_s, check=False)
    if out.returncode not in (0, 1):
        raise GitError(
            f"cannot inspect the index of {os.fspath(path)}: {stderr_tail(out.stderr)}; "
            "check the worktree with `git status` there",
            returncode=out.returncode,
            stderr=out.stderr.decode("utf-8", "replace"),
            repo=path,
        )
    return out.returncode == 1


async def commit_all(
    path: StrPath,
    author_name: str,
    author_email: str,
    message: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> str | None:
    """Commit everything in cfn's worktree ``path`` (``git add -A``); return the new sha.

    Returns None when there was nothing to commit. The author is also the committer, set
    through the environment so no git config is needed; hooks are skipped
    (``--no-verify``) since this is cfn's bookkeeping, not the user's commit.
    """
    await require_linked_worktree(path, timeout_s=timeout_s)
    await run_git(path, "add", "--all", timeout_s=timeout_s)
    if not await has_staged_changes(path, timeout_s=timeout_s):
        return None
    return await commit_staged(
        path,
        format_commit_message(message),
        identity=Identity(author_name, author_email),
        verify=False,
        timeout_s=timeout_s,
    )
