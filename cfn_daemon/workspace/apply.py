"""Bringing a run's result into the user's branch: merge, squash, or a patch file.

These are the only workspace functions that change the user's checkout; they refuse a
dirty tree or a detached HEAD, and roll a conflicting merge back before raising.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from cfn_daemon.workspace.errors import GitError, stderr_tail
from cfn_daemon.workspace.gitcmd import (
    CFN_IDENTITY,
    DEFAULT_TIMEOUT_S,
    GitOutput,
    Identity,
    StrPath,
    current_branch,
    identity_env,
    require_clean,
    resolve_ref,
    run_git,
    validate_repo,
)
from cfn_daemon.workspace.merge import (
    MAX_CONFLICT_BYTES,
    MERGE_FLAGS,
    MergeConflictError,
    collect_conflicts,
    undo_merge,
)
from cfn_daemon.workspace.worktrees import (
    commit_staged,
    format_commit_message,
    has_staged_changes,
)

__all__ = ["apply_merge", "apply_squash", "format_patch"]


async def _prepare_apply(worktree: StrPath, branch: str, *, timeout_s: float) -> str:
    await validate_repo(worktree, timeout_s=timeout_s)
    current = await current_branch(worktree, timeout_s=timeout_s)
    if current is None:
        raise GitError(
            f"HEAD is detached in {os.fspath(worktree)}; check out a branch first",
            repo=worktree,
        )
    if current == branch:
        raise GitError(
            f"{branch!r} is the branch checked out in {os.fspath(worktree)}; check out the "
            "branch the result should go into",
            repo=worktree,
        )
    await require_clean(worktree, timeout_s=timeout_s)
    return await resolve_ref(worktree, branch, timeout_s=timeout_s)


async def _conflict_error(
    worktree: StrPath, branch: str, out: GitOutput, *, timeout_s: float
) -> GitError:
    conflicts = await collect_conflicts(worktree, branch, MAX_CONFLICT_BYTES, timeout_s=timeout_s)
    await undo_merge(worktree, timeout_s=timeout_s)
    if not conflicts:
        return GitError(
            f"merging {branch!r} in {os.fspath(worktree)} failed: {stderr_tail(out.stderr)}; "
            "nothing was changed; fix what git reports, then retry",
            returncode=out.returncode,
            stderr=out.stderr.decode("utf-8", "replace"),
            repo=worktree,
        )
    files = ", ".join(c.path for c in conflicts)
    return MergeConflictError(
        f"{branch!r} conflicts with the current branch of {os.fspath(worktree)} in "
        f"{files}; nothing was changed: merge it by hand (`git merge {branch}`) and "
        "resolve the conflicts there",
        conflicts,
        branch=branch,
        repo=worktree,
    )


async def apply_merge(
    worktree: StrPath,
    branch: str,
    *,
    message: str | None = None,
    identity: Identity | None = None,
    verify: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> str | None:
    """Merge ``branch`` into the branch checked out at ``worktree`` (``--no-ff``).

    This is the user's branch: their git identity and hooks apply unless ``identity`` /
    ``verify=False`` say otherwise. Refuses a dirty tree (DirtyTreeError) or a detached
    HEAD; a conflict is rolled back and raised as MergeConflictError. Returns the new
    HEAD, or None if ``branch`` was already merged.
    """
    sha = await _prepare_apply(worktree, branch, timeout_s=timeout_s)
    before = await resolve_ref(worktree, "HEAD", timeout_s=timeout_s)
    args = ["merge", "--no-ff", "--quiet", *MERGE_FLAGS]
    if not verify:
        args.append("--no-verify")
    args += ["-m", format_commit_message(message or f"Merge {branch}"), sha]
    out = await run_git(
        worktree, *args, timeout_s=timeout_s, env=identity_env(identity), check=False
    )
    if out.returncode != 0:
        raise await _conflict_error(worktree, branch, out, timeout_s=timeout_s)
    after = await resolve_ref(worktree, "HEAD", timeout_s=timeout_s)
    return None if after == before else after


async def apply_squash(
    worktree: StrPath,
    branch: str,
    message: str,
    *,
    identity: Identity | None = None,
    verify: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> str | None:
    """Squash ``branch`` into one new commit on the branch checked out at ``worktree``.

    Same rules as ``apply_merge``; if the commit itself fails (a hook refused it) the
    squash is rolled back too, so the tree is either committed or untouched. Returns the
    new HEAD, or None when ``branch`` brings no change.
    """
    sha = await _prepare_apply(worktree, branch, timeout_s=timeout_s)
    out = await run_git(
        worktree,
        "merge",
        "--squash",
        "--quiet",
        "--no-autostash",
        "--no-verify-signatures",
        sha,
        timeout_s=timeout_s,
        check=False,
    )
    if out.returncode != 0:
        raise await _conflict_error(worktree, branch, out, timeout_s=timeout_s)
    if not await has_staged_changes(worktree, timeout_s=timeout_s):
        await run_git(worktree, "reset", "--merge", timeout_s=timeout_s)  # drops SQUASH_MSG state
        return None
    try:
        return await commit_staged(
            worktree,
            format_commit_message(message),
            identity=identity,
            verify=verify,
            timeout_s=timeout_s,
        )
    except GitError:
        await run_git(worktree, "reset", "--merge", timeout_s=timeout_s)
        raise


async def format_patch(
    repo: StrPath,
    base: str,
    head: str,
    file: StrPath,
    *,
    message: str = "cfn result",
    identity: Identity = CFN_IDENTITY,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Path | None:
    """Write what ``head`` changed since ``base`` (``base...head``) as one mailbox patch.

    The change is squashed into a single commit first (an unreferenced object; no ref or
    tree is touched), since ``git format-patch`` of a history with merge commits would
    skip the merges. The file applies with ``git am`` or ``git apply``. Returns its path,
    or None (no file written) when there is no change.
    """
    head_sha = await resolve_ref(repo, head, timeout_s=timeout_s)
    base_sha = await resolve_ref(repo, base, timeout_s=timeout_s)
    mb = await run_git(repo, "merge-base", base_sha, head_sha, timeout_s=timeout_s, check=False)
    if mb.returncode != 0 or not mb.text:
        raise GitError(
            f"{base!r} and {head!r} have no common ancestor in {os.fspath(repo)} (unrelated "
            "histories); compare a branch with the one it was started from",
            repo=repo,
        )
    tree = (await run_git(repo, "rev-parse", f"{head_sha}^{{tree}}", timeout_s=timeout_s)).text
    base_tree = (await run_git(repo, "rev-parse", f"{mb.text}^{{tree}}", timeout_s=timeout_s)).text
    if tree == base_tree:
        return None
    squashed = await run_git(
        repo,
        "commit-tree",
        tree,
        "-p",
        mb.text,
        "-F",
        "-",
        timeout_s=timeout_s,
        env=identity_env(identity),
        stdin=format_commit_message(message).encode("utf-8"),
    )
    patch = await run_git(
        repo,
        "format-patch",
        "--stdout",
        "--binary",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--src-prefix=a/",
        "--dst-prefix=b/",
        "-1",
        squashed.text,
        timeout_s=timeout_s,
    )
    dest = Path(file)
    tmp = dest.with_name(f".{dest.name}.tmp")
    await asyncio.to_thread(tmp.write_bytes, patch.stdout)
    os.replace(tmp, dest)
    return dest
