"""Merging cfn's branches into a candidate branch, and the diff validators review.

``merge_into`` runs in a scratch worktree cfn owns and reports conflicts instead of
leaving them behind; ``diff`` shows what a branch changed since it forked.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from cfn_daemon.workspace.errors import GitError, UnknownRefError, stderr_tail
from cfn_daemon.workspace.gitcmd import (
    CFN_IDENTITY,
    DEFAULT_TIMEOUT_S,
    Identity,
    StrPath,
    branch_sha,
    identity_env,
    is_clean,
    log,
    parse_status,
    require_linked_worktree,
    resolve_ref,
    run_git,
    split_z,
)
from cfn_daemon.workspace.worktrees import ensure_worktree, format_commit_message

__all__ = [
    "MAX_CONFLICT_BYTES",
    "MAX_CONFLICT_FILE_BYTES",
    "Conflict",
    "DiffInfo",
    "MergeConflictError",
    "MergeResult",
    "diff",
    "merge_into",
]

MAX_CONFLICT_BYTES = 64 << 10  # hunk text kept per merge, over all conflicting files
MAX_CONFLICT_FILE_BYTES = 16 << 10  # ... and per file, so one huge file cannot starve the rest

_UNMERGED_KINDS = {
    "DD": "both deleted",
    "AU": "added by us",
    "UD": "deleted by them",
    "UA": "added by them",
    "DU": "deleted by us",
    "AA": "both added",
    "UU": "both modified",
}


class Conflict(msgspec.Struct, frozen=True):
    """A file that did not merge: its conflict hunks, markers included (capped)."""

    path: str
    hunks: list[str]
    source: str = ""  # the branch being merged
    kind: str = "both modified"  # as `git status` words it
    truncated: bool = False  # hunks were cut or dropped to respect the size caps


class MergeConflictError(GitError):
    """Applying a result into the user's branch conflicted; the merge was rolled back.

    ``conflicts`` (also in ``details``, as plain data) are the files that did not merge.
    """

    code = "merge_conflict"

    def __init__(
        self,
        message: str,
        conflicts: Sequence[Conflict] = (),
        *,
        branch: str | None = None,
        repo: StrPath | None = None,
        details: dict[str, Any] | None = None,
        code: str | None = None,
    ) -> None:
        merged = dict(details or {})
        if branch is not None:
            merged["branch"] = branch
        if conflicts:
            merged["conflicts"] = msgspec.to_builtins(list(conflicts))
        super().__init__(message, repo=repo, details=merged, code=code)
        self.conflicts: list[Conflict] = list(conflicts) or _conflicts_of(self.details)


def _conflicts_of(details: dict[str, Any]) -> list[Conflict]:
    # An error rebuilt from the wire carries its conflicts as plain data only.
    try:
        return msgspec.convert(details.get("conflicts", []), list[Conflict])
    except msgspec.ValidationError:
        return []


class MergeResult(msgspec.Struct, frozen=True):
    """Outcome of ``merge_into``; a conflicting source leaves the target as it was."""

    ok: bool
    head: str  # target branch tip after all merges
    merged: list[str]
    conflicts: list[Conflict]


class DiffInfo(msgspec.Struct, frozen=True):
    """What ``head`` changed since it forked from ``base`` (``base...head``)."""

    base: str  # resolved sha of the base argument
    head: str
    merge_base: str
    files_changed: int
    insertions: int
    deletions: int
    changed_files: list[str]
    stat: str
    patch: str  # capped at max_patch_bytes, with a truncation marker
    full_patch: bytes  # uncapped, for storing as an artifact
    truncated: bool


# ---------------------------------------------------------------------------- merges


def _cap_bytes(data: bytes, limit: int) -> tuple[bytes, int]:
    """``data`` cut to at most ``limit`` bytes (at a line end when there is one), and how
    many bytes were dropped."""
    if len(data) <= limit:
        return data, 0
    cut = data.rfind(b"\n", 0, limit)
    keep = data[: cut + 1] if cut > 0 else data[: max(limit, 0)]
    return keep, len(data) - len(keep)


def _truncated(data: bytes, limit: int) -> tuple[str, bool]:
    keep, dropped = _cap_bytes(data, limit)
    text = keep.decode("utf-8", "replace")
    if not dropped:
        return text, False
    if text and not text.endswith("\n"):
        text += "\n"
    return text + f"[... truncated {dropped} bytes]\n", True


def _conflict_hunks(text: str) -> list[str]:
    hunks: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines(keepends=True):
        bare = line.rstrip("\r\n")
        if current is None:
            if bare == "<<<<<<<" or bare.startswith("<<<<<<< "):
                current = [line]
            continue
        current.append(line)
        if bare == ">>>>>>>" or bare.startswith(">>>>>>> "):
            hunks.append("".join(current))
            current = None
    if current:
        hunks.append("".join(current))
    return hunks


def _read_conflicted(file: Path) -> bytes:
    return file.read_bytes() if file.is_file() and not file.is_symlink() else b""


async def collect_conflicts(
    worktree: StrPath, source: str, budget: int, *, timeout_s: float
) -> list[Conflict]:
    out = await run_git(
        worktree, "status", "--porcelain=v1", "-z", "--untracked-files=no", timeout_s=timeout_s
    )
    conflicts: list[Conflict] = []
    for entry in parse_status(out.stdout):
        if entry.code not in _UNMERGED_KINDS:
            continue
        hunks: list[str] = []
        truncated = False
        data = await asyncio.to_thread(_read_conflicted, Path(worktree, entry.path))
        if b"\0" in data[:8000]:
            data = b""  # binary: git leaves no markers in it
        room = min(budget, MAX_CONFLICT_FILE_BYTES)
        for hunk in _conflict_hunks(data.decode("utf-8", "replace")):
            raw = hunk.encode("utf-8")
            if room <= 0:
                truncated = True
                break
            text, cut = _truncated(raw, room)
            hunks.append(text)
            room -= min(len(raw), room)
            budget -= min(len(raw), budget)
            truncated = truncated or cut
        conflicts.append(
            Conflict(
                path=entry.path,
                hunks=hunks,
                source=source,
                kind=_UNMERGED_KINDS[entry.code],
                truncated=truncated,
            )
        )
    return conflicts


async def _merge_in_progress(path: StrPath, *, timeout_s: float) -> bool:
    out = await run_git(
        path, "rev-parse", "--verify", "--quiet", "MERGE_HEAD", timeout_s=timeout_s, check=False
    )
    return out.returncode == 0


async def undo_merge(path: StrPath, *, timeout_s: float) -> None:
    # --squash merges leave no MERGE_HEAD, so `merge --abort` cannot undo them; on a tree
    # that was clean before, `reset --merge` restores exactly the pre-merge state.
    if await _merge_in_progress(path, timeout_s=timeout_s):
        await run_git(path, "merge", "--abort", timeout_s=timeout_s)
    else:
        await run_git(path, "reset", "--merge", timeout_s=timeout_s)


MERGE_FLAGS = ("--no-edit", "--no-log", "--no-stat", "--no-autostash", "--no-verify-signatures")


async def merge_into(
    repo: StrPath,
    target_branch: str,
    source_branches: Sequence[str],
    worktree_path: StrPath,
    message: str,
    *,
    base: str | None = None,
    identity: Identity = CFN_IDENTITY,
    max_conflict_bytes: int = MAX_CONFLICT_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> MergeResult:
    """Merge each source branch into ``target_branch``, in cfn's worktree ``worktree_path``.

    The target is created at ``base`` when it does not exist yet (it must then be given),
    and its worktree is created or reused like ``ensure_worktree``; leftovers of an
    interrupted merge there are discarded first. Each source gets a ``--no-ff`` merge
    commit (so the candidate records which branch brought what), without hooks. A source
    that conflicts is aborted, leaving the target as it was, and reported with the
    conflicting files and their hunks (capped at ``max_conflict_bytes`` in all); the
    remaining sources are still merged.
    """
    if await branch_sha(repo, target_branch, timeout_s=timeout_s) is None and base is None:
        raise UnknownRefError(
            f"branch {target_branch!r} does not exist in {os.fspath(repo)} and no base was "
            "given to create it; pass the commit to start it from as base",
            repo=repo,
        )
    await ensure_worktree(
        repo, worktree_path, target_branch, base or target_branch, timeout_s=timeout_s
    )
    await require_linked_worktree(worktree_path, timeout_s=timeout_s)
    # This worktree is cfn's scratch space; a crash mid-merge must not wedge the next run.
    if await _merge_in_progress(worktree_path, timeout_s=timeout_s):
        await run_git(worktree_path, "merge", "--abort", timeout_s=timeout_s)
    if not await is_clean(worktree_path, timeout_s=timeout_s):
        await run_git(worktree_path, "reset", "--hard", "--quiet", "HEAD", timeout_s=timeout_s)
        await run_git(worktree_path, "clean", "-d", "--force", "--quiet", timeout_s=timeout_s)

    merged: list[str] = []
    conflicts: list[Conflict] = []
    budget = max_conflict_bytes
    body = format_commit_message(message).rstrip("\n")
    for source in source_branches:
        sha = await resolve_ref(repo, source, timeout_s=timeout_s)
        before = await resolve_ref(worktree_path, "HEAD", timeout_s=timeout_s)
        out = await run_git(
            worktree_path,
            "merge",
            "--no-ff",
            "--no-verify",
            "--quiet",
            *MERGE_FLAGS,
            "-m",
            f"{body}\n\nCfn-Merged-Branch: {source}\n",
            sha,
            timeout_s=timeout_s,
            env=identity_env(identity),
            check=False,
        )
        if out.returncode == 0:
            merged.append(source)
            continue
        found = await collect_conflicts(worktree_path, source, budget, timeout_s=timeout_s)
        await undo_merge(worktree_path, timeout_s=timeout_s)
        after = await resolve_ref(worktree_path, "HEAD", timeout_s=timeout_s)
        if after != before:
            raise GitError(
                f"aborting the merge of {source!r} left {target_branch!r} moved (from "
                f"{before} to {after}) in {os.fspath(worktree_path)}; reset that branch by hand, "
                "then retry",
                repo=worktree_path,
            )
        if not found:
            raise GitError(
                f"merging {source!r} into {target_branch!r} in {os.fspath(worktree_path)} "
                f"failed: {stderr_tail(out.stderr)}; fix what git reports, then retry",
                returncode=out.returncode,
                stderr=out.stderr.decode("utf-8", "replace"),
                repo=worktree_path,
            )
        budget -= sum(len(h.encode("utf-8")) for c in found for h in c.hunks)
        conflicts.extend(found)
        log.info(
            "workspace_merge_conflict",
            target=target_branch,
            source=source,
            files=[c.path for c in found],
        )
    head = await resolve_ref(worktree_path, "HEAD", timeout_s=timeout_s)
    return MergeResult(ok=not conflicts, head=head, merged=merged, conflicts=conflicts)


# ---------------------------------------------------------------------------- diffs

_SHORTSTAT = {
    "files": re.compile(r"(\d+) files? changed"),
    "insertions": re.compile(r"(\d+) insertions?\(\+\)"),
    "deletions": re.compile(r"(\d+) deletions?\(-\)"),
}

# Pinned so the user's diff config (external drivers, textconv, prefixes, colours,
# rename detection off) cannot change what reviewers see.
_DIFF_FLAGS = (
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "-M",
)


async def diff(
    repo: StrPath,
    base: str,
    head: str,
    max_patch_bytes: int = 256 << 10,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> DiffInfo:
    """What ``head`` changed since it forked from ``base``: stat, capped and full patch.

    Uses ``base...head`` (from the merge base), not ``base..head``: if the user's branch
    moved on while the run was working, a two-dot diff would show their new commits as
    reverted by the run; the three-dot diff shows only what the run itself did.
    """
    base_sha = await resolve_ref(repo, base, timeout_s=timeout_s)
    head_sha = await resolve_ref(repo, head, timeout_s=timeout_s)
    mb = await run_git(repo, "merge-base", base_sha, head_sha, timeout_s=timeout_s, check=False)
    if mb.returncode != 0 or not mb.text:
        raise GitError(
            f"{base!r} and {head!r} have no common ancestor in {os.fspath(repo)} (unrelated "
            "histories); compare a branch with the one it was started from",
            repo=repo,
        )
    span = f"{base_sha}...{head_sha}"
    short = await run_git(repo, "diff", *_DIFF_FLAGS, "--shortstat", span, timeout_s=timeout_s)
    counts = {
        key: int(m.group(1)) if (m := rx.search(short.text)) else 0
        for key, rx in _SHORTSTAT.items()
    }
    names = await run_git(
        repo, "diff", *_DIFF_FLAGS, "--name-only", "-z", span, timeout_s=timeout_s
    )
    stat_out = await run_git(repo, "diff", *_DIFF_FLAGS, "--stat=120", span, timeout_s=timeout_s)
    full = await run_git(repo, "diff", *_DIFF_FLAGS, span, timeout_s=timeout_s)
    patch, truncated = _truncated(full.stdout, max_patch_bytes)
    return DiffInfo(
        base=base_sha,
        head=head_sha,
        merge_base=mb.text,
        files_changed=counts["files"],
        insertions=counts["insertions"],
        deletions=counts["deletions"],
        changed_files=split_z(names.stdout),
        stat=stat_out.stdout.decode("utf-8", "replace"),
        patch=patch,
        full_patch=full.stdout,
        truncated=truncated,
    )
