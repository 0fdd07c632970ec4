"""The git side of one CFN run: implementer worktrees, the candidate, review trees.

Layout (under cfnd's state dir, never inside the user's work tree):

    workspaces/<run>/<agent>/          implementer worktree on branch cfn/<run>/<agent>
    workspaces/<run>/_candidate/       the merge worktree of branch cfn/<run>/candidate
    workspaces/<run>/_tree-<sha12>/    detached, read-only tree of one commit (checks,
                                       validators, the owner)
    artifacts/<run>/                   full patches and check logs

Every step is idempotent, so a cfnd restarted at any point reuses what exists:
``ensure_worktree`` adopts an existing worktree, a merge of an already merged branch
changes nothing, and a detached tree of the same commit is reused.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import structlog

from cfn_daemon.workspace.apply import apply_merge, apply_squash, format_patch
from cfn_daemon.workspace.gitcmd import branch_sha, resolve_ref, validate_repo
from cfn_daemon.workspace.merge import DiffInfo, MergeResult, diff, merge_into
from cfn_daemon.workspace.worktrees import (
    add_detached_worktree,
    commit_all,
    delete_branches,
    ensure_worktree,
    list_branches,
    list_worktrees,
    remove_worktree,
    reset_worktree_to,
)

log = structlog.get_logger("cfn.workspace")

CANDIDATE = "candidate"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def branch_prefix(run_id: str) -> str:
    return f"cfn/{run_id}"


class RunWorkspace:
    """Worktrees and branches of one run in the user's repository ``repo``."""

    def __init__(self, repo: Path, run_id: str, state_dir: Path) -> None:
        self.repo = repo
        self.run_id = run_id
        self.root = state_dir / "workspaces" / run_id
        self.artifacts = state_dir / "artifacts" / run_id

    # -- names

    def branch(self, agent: str) -> str:
        return f"{branch_prefix(self.run_id)}/{agent}"

    @property
    def candidate_branch(self) -> str:
        return self.branch(CANDIDATE)

    def path(self, agent: str) -> Path:
        return self.root / _SAFE.sub("_", agent)

    def tree_path(self, commit: str) -> Path:
        return self.root / f"_tree-{commit[:12]}"

    # -- implementers

    async def prepare(self, agent: str, start_ref: str) -> str:
        """The implementer's worktree, its branch moved to ``start_ref``; returns HEAD.

        Whatever an interrupted earlier attempt left uncommitted is committed first, so
        moving the branch never silently drops work (the commit stays in the reflog).
        """
        path = self.path(agent)
        head = await ensure_worktree(self.repo, path, self.branch(agent), start_ref)
        target = await resolve_ref(self.repo, start_ref)
        if head == target:
            return head
        await commit_all(path, f"cfn {agent}", f"{_SAFE.sub('-', agent)}@cfn.local", "leftovers")
        return await reset_worktree_to(path, target)

    async def commit(self, agent: str, message: str) -> str | None:
        """Commit what the implementer left in its worktree (author ``cfn <agent>``)."""
        email = f"{_SAFE.sub('-', agent)}@cfn.local"
        return await commit_all(self.path(agent), f"cfn {agent}", email, message)

    async def head_of(self, agent: str) -> str | None:
        return await branch_sha(self.repo, self.branch(agent), timeout_s=60.0)

    async def changes(self, start: str, head: str, max_patch_bytes: int = 64 << 10) -> DiffInfo:
        """What ``head`` changed since ``start``."""
        return await diff(self.repo, start, head, max_patch_bytes)

    # -- candidates

    async def candidate_head(self) -> str | None:
        return await branch_sha(self.repo, self.candidate_branch, timeout_s=60.0)

    async def merge(self, agents: list[str], base: str, label: str) -> MergeResult:
        """Merge every implementer's branch into the candidate (created at ``base``)."""
        return await merge_into(
            self.repo,
            self.candidate_branch,
            [self.branch(a) for a in agents],
            self.root / "_candidate",
            f"cfn {self.run_id}: merge implementers ({label})",
            base=base,
        )

    async def tree(self, commit: str) -> Path:
        """A detached, read-only tree of ``commit`` for checks and reviewers."""
        path = self.tree_path(commit)
        await add_detached_worktree(self.repo, path, commit)
        return path

    async def save_artifact(self, name: str, data: bytes) -> Path:
        """Store a full patch or check log as a file (never as a Redis payload)."""
        path = self.artifacts / name

        def write() -> None:
            self.artifacts.mkdir(parents=True, exist_ok=True, mode=0o750)
            path.write_bytes(data)

        await asyncio.to_thread(write)
        return path

    # -- the end

    async def apply(
        self, how: str, branch: str, base: str, file: str | None, repo: Path
    ) -> tuple[str | None, str | None]:
        """Bring ``branch`` into the branch checked out in ``repo``; (new commit, patch file)."""
        if how == "patch":
            target = Path(file) if file else self.artifacts / "result.patch"
            await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
            written = await format_patch(self.repo, base, branch, target)
            return None, str(written) if written else None
        if how == "squash":
            msg = f"cfn {self.run_id}: squash of {branch}"
            return await apply_squash(repo, branch, msg), None
        return await apply_merge(repo, branch, message=f"cfn {self.run_id}: merge {branch}"), None

    async def clean(self) -> tuple[list[str], list[str]]:
        """Remove the run's worktrees and ``cfn/<run>/*`` branches."""
        removed = []
        for wt in await list_worktrees(self.repo):
            if Path(wt.path).is_relative_to(self.root) and await remove_worktree(
                self.repo, wt.path
            ):
                removed.append(wt.path)
        branches = await delete_branches(self.repo, branch_prefix(self.run_id))
        return removed, branches

    async def branches(self) -> list[str]:
        return await list_branches(self.repo, branch_prefix(self.run_id))


def expand(path: str) -> Path:
    """``~`` expanded (no I/O beyond reading $HOME)."""
    return Path(path).expanduser()


async def check_repo(repo: str, base: str) -> tuple[Path, str]:
    """The repository's top-level directory and the base commit, or a clear error."""
    top = await validate_repo(expand(repo))
    return top, await resolve_ref(top, base)
