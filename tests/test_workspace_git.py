"""The git workspace modules of cfn_daemon.workspace against real repositories in tmp_path."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from cfn_daemon.workspace.apply import apply_merge, apply_squash, format_patch
from cfn_daemon.workspace.errors import (
    DirtyTreeError,
    GitError,
    GitTimeoutError,
    NotAGitRepoError,
    UnknownRefError,
)
from cfn_daemon.workspace.gitcmd import (
    current_branch,
    is_clean,
    is_git_repo,
    resolve_ref,
    validate_repo,
)
from cfn_daemon.workspace.merge import MergeConflictError, diff, merge_into
from cfn_daemon.workspace.worktrees import (
    add_detached_worktree,
    commit_all,
    delete_branches,
    ensure_worktree,
    format_commit_message,
    list_branches,
    list_worktrees,
    remove_worktree,
    reset_worktree_to,
)

LINES = "".join(f"line {i}\n" for i in range(1, 21))


def g(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run git synchronously for test setup and inspection; return stripped stdout."""
    done = subprocess.run(
        ["git", "-C", str(cwd), *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return done.stdout.strip()


def commit_file(cwd: Path, name: str, content: str, message: str) -> str:
    path = cwd / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    g(cwd, "add", "--", name)
    g(cwd, "commit", "-q", "-m", message)
    return g(cwd, "rev-parse", "HEAD")


def snapshot(repo: Path) -> tuple[str, str, str, str]:
    """What the user sees in their checkout: HEAD, branch, status and a file."""
    return (
        g(repo, "rev-parse", "HEAD"),
        g(repo, "symbolic-ref", "--short", "HEAD"),
        g(repo, "status", "--porcelain", "--untracked-files=all"),
        (repo / "a.txt").read_text(),
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    g(path, "init", "-q", "-b", "main")
    g(path, "config", "user.name", "Repo Owner")
    g(path, "config", "user.email", "owner@example.com")
    (path / "a.txt").write_text(LINES)
    (path / "README").write_text("hello\n")
    g(path, "add", "-A")
    g(path, "commit", "-q", "-m", "initial")
    return path


@pytest.fixture
def wts(tmp_path: Path) -> Path:
    """Where cfn's worktrees go (outside the user's work tree)."""
    path = tmp_path / "worktrees"
    path.mkdir()
    return path


def replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = text + "\n"
    path.write_text("".join(lines))


async def branch_with_edit(
    repo: Path, wts: Path, branch: str, line: int, text: str, extra: str | None = None
) -> str:
    wt = wts / branch.replace("/", "_")
    await ensure_worktree(repo, wt, branch, "main")
    replace_line(wt / "a.txt", line, text)
    if extra:
        (wt / extra).write_text(f"{extra} from {branch}\n")
    sha = await commit_all(wt, "Agent", "agent@cfn", f"{branch} edits")
    assert sha is not None
    return sha


# ---------------------------------------------------------------------------- repo & refs


async def test_validate_repo_and_refs(repo: Path, tmp_path: Path) -> None:
    assert await is_git_repo(repo)
    assert await is_git_repo(repo / "..") is False
    assert await is_git_repo(tmp_path / "missing") is False
    assert await validate_repo(repo) == repo.resolve()
    with pytest.raises(NotAGitRepoError, match="not inside a git work tree"):
        await validate_repo(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    g(empty, "init", "-q")
    with pytest.raises(NotAGitRepoError, match="no commits"):
        await validate_repo(empty)
    assert await resolve_ref(repo, "main") == g(repo, "rev-parse", "HEAD")
    with pytest.raises(UnknownRefError, match="nope"):
        await resolve_ref(repo, "nope")
    assert await current_branch(repo) == "main"


async def test_git_error_names_the_command_and_its_stderr(repo: Path) -> None:
    with pytest.raises(GitError) as info:
        await ensure_worktree(repo, repo.parent / "wt", "bad..name", "main")
    assert "not a valid git branch name" in str(info.value)
    with pytest.raises(GitError) as info:
        await diff(repo, "main", "0" * 40)
    assert "does not name a commit" in str(info.value)


def _exited_within(pid: int, timeout_s: float) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [], timeout_s)
    finally:
        os.close(fd)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


async def test_timeout_kills_git_and_its_children(repo: Path, wts: Path) -> None:
    pidfile = repo.parent / "hook.pid"
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec tail -f /dev/null\n")
    hook.chmod(0o755)
    with pytest.raises(GitTimeoutError, match="killed"):
        await ensure_worktree(repo, wts / "a", "cfn/r1/a", "main", timeout_s=2.0)
    pid = int(pidfile.read_text())
    # SIGKILLed, it may still be R until a loaded machine schedules its exit: wait for
    # its exit on a pidfd (readable once it has exited), within a bound.
    await asyncio.to_thread(_exited_within, pid, 5.0)
    state = _proc_state(pid)
    assert state in {"gone", "Z", "X"}, f"hook process {pid} survived the timeout ({state})"
    # A later attempt (the daemon restarted) repairs what the killed one left.
    hook.unlink()
    sha = await ensure_worktree(repo, wts / "a", "cfn/r1/a", "main")
    assert sha == g(repo, "rev-parse", "main")
    assert await is_clean(wts / "a")


# ---------------------------------------------------------------------------- worktrees


async def test_ensure_worktree_creates_reuses_and_recovers(repo: Path, wts: Path) -> None:
    before = snapshot(repo)
    main_sha = before[0]
    wt = wts / "impl-1"
    sha = await ensure_worktree(repo, wt, "cfn/r1/impl-1", "main")
    assert sha == main_sha
    assert (wt / "a.txt").read_text() == LINES
    assert await current_branch(wt) == "cfn/r1/impl-1"
    assert g(repo, "rev-parse", "cfn/r1/impl-1") == main_sha

    # Work committed in a previous life survives a re-ensure (not reset to start_ref).
    (wt / "new.txt").write_text("new\n")
    committed = await commit_all(wt, "Agent", "agent@cfn", "add new")
    assert committed is not None
    assert await ensure_worktree(repo, wt, "cfn/r1/impl-1", "main") == committed
    assert (wt / "new.txt").exists()

    # The directory vanished but git still has it registered.
    shutil.rmtree(wt)
    assert await ensure_worktree(repo, wt, "cfn/r1/impl-1", "main") == committed
    assert (wt / "new.txt").read_text() == "new\n"
    registered = [w for w in await list_worktrees(repo) if Path(w.path) == wt.resolve()]
    assert len(registered) == 1
    assert registered[0].branch == "cfn/r1/impl-1"
    assert g(repo, "worktree", "list").count(str(wt.resolve())) == 1

    # The same branch moved to another path (its old directory deleted) is taken along.
    shutil.rmtree(wt)
    moved = wts / "moved"
    assert await ensure_worktree(repo, moved, "cfn/r1/impl-1", "main") == committed
    assert str(wt.resolve()) not in g(repo, "worktree", "list")

    assert snapshot(repo) == before


async def test_ensure_worktree_refusals(repo: Path, wts: Path) -> None:
    await ensure_worktree(repo, wts / "a", "cfn/r1/a", "main")
    with pytest.raises(GitError, match="already checked out"):
        await ensure_worktree(repo, wts / "b", "cfn/r1/a", "main")
    with pytest.raises(GitError, match="not on 'cfn/r1/other'"):
        await ensure_worktree(repo, wts / "a", "cfn/r1/other", "main")
    occupied = wts / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("x")
    with pytest.raises(GitError, match="already exists"):
        await ensure_worktree(repo, occupied, "cfn/r1/c", "main")
    with pytest.raises(GitError, match="already checked out"):
        await ensure_worktree(repo, wts / "m", "main", "main")
    with pytest.raises(UnknownRefError):
        await ensure_worktree(repo, wts / "d", "cfn/r1/d", "no-such-ref")


async def test_reset_worktree_to(repo: Path, wts: Path) -> None:
    wt = wts / "impl"
    await ensure_worktree(repo, wt, "cfn/r1/impl", "main")
    target = commit_file(repo, "later.txt", "later\n", "later on main")
    (wt / "scratch.txt").write_text("uncommitted\n")
    with pytest.raises(DirtyTreeError, match=r"scratch\.txt") as info:
        await reset_worktree_to(wt, target)
    assert info.value.dirty_files == ["scratch.txt"]
    assert (wt / "scratch.txt").exists()  # the refusal threw nothing away
    await commit_all(wt, "Agent", "agent@cfn", "save")
    assert await reset_worktree_to(wt, "main") == target
    assert g(repo, "rev-parse", "cfn/r1/impl") == target
    assert (wt / "later.txt").exists()
    assert not (wt / "scratch.txt").exists()
    with pytest.raises(GitError, match="main worktree"):
        await reset_worktree_to(repo, "main~1")
    assert g(repo, "rev-parse", "HEAD") == target


# ---------------------------------------------------------------------------- commits


async def test_commit_all_identity_and_nothing_to_commit(
    repo: Path, wts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No identity anywhere in git config: commit_all must bring its own.
    g(repo, "config", "--unset", "user.name")
    g(repo, "config", "--unset", "user.email")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("EMAIL", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME"):
        monkeypatch.delenv(var, raising=False)
    wt = wts / "impl"
    start = await ensure_worktree(repo, wt, "cfn/r1/impl", "main")
    assert await commit_all(wt, "Agent", "agent@cfn", "nothing") is None
    assert g(wt, "rev-parse", "HEAD") == start

    (wt / "a.txt").write_text("changed\n")
    (wt / "README").unlink()
    (wt / "sub").mkdir()
    (wt / "sub" / "new.txt").write_text("new\n")
    long_summary = "Implement the feature " + "very " * 30 + "carefully"
    sha = await commit_all(
        wt, "Coder One", "coder-1@cfn.local", f"{long_summary}\n\n# not a comment\nbody line"
    )
    assert sha is not None and sha == g(wt, "rev-parse", "HEAD")
    assert g(wt, "log", "-1", "--format=%an|%ae|%cn|%ce") == (
        "Coder One|coder-1@cfn.local|Coder One|coder-1@cfn.local"
    )
    subject = g(wt, "log", "-1", "--format=%s")
    assert len(subject) <= 72 and subject.endswith("...")
    body = g(wt, "log", "-1", "--format=%b")
    assert long_summary in body and "# not a comment" in body and "body line" in body
    assert sorted(g(wt, "show", "--name-status", "--format=", "HEAD").splitlines()) == [
        "A\tsub/new.txt",
        "D\tREADME",
        "M\ta.txt",
    ]
    assert await is_clean(wt)
    assert await commit_all(wt, "Coder One", "coder-1@cfn.local", "again") is None


async def test_commit_all_skips_hooks_and_refuses_the_main_worktree(repo: Path, wts: Path) -> None:
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    wt = wts / "impl"
    await ensure_worktree(repo, wt, "cfn/r1/impl", "main")
    (wt / "x.txt").write_text("x\n")
    assert await commit_all(wt, "Agent", "agent@cfn", "x") is not None

    (repo / "user-work.txt").write_text("mine\n")
    with pytest.raises(GitError, match="main worktree"):
        await commit_all(repo, "Agent", "agent@cfn", "steal")
    assert g(repo, "status", "--porcelain") == "?? user-work.txt"


def test_format_commit_message() -> None:
    assert format_commit_message("  fix it  ") == "fix it\n"
    assert format_commit_message("") == "cfn: update\n"
    assert format_commit_message("sum\n\n\nbody\n") == "sum\n\nbody\n"
    long = "x" * 100
    summary, _, rest = format_commit_message(long).partition("\n\n")
    assert len(summary) == 72 and rest == long + "\n"


# ---------------------------------------------------------------------------- merges


async def test_merge_non_conflicting_branches(repo: Path, wts: Path) -> None:
    before = snapshot(repo)
    a = await branch_with_edit(repo, wts, "cfn/r1/a", 2, "line 2 by a", extra="a-only.txt")
    b = await branch_with_edit(repo, wts, "cfn/r1/b", 18, "line 18 by b", extra="b-only.txt")
    result = await merge_into(
        repo,
        "cfn/r1/candidate",
        ["cfn/r1/a", "cfn/r1/b"],
        wts / "merge",
        "cfn: candidate for iteration 1",
        base="main",
    )
    assert result.ok and result.conflicts == []
    assert result.merged == ["cfn/r1/a", "cfn/r1/b"]
    assert result.head == g(repo, "rev-parse", "cfn/r1/candidate")
    merged_a = g(repo, "show", "cfn/r1/candidate:a.txt")
    assert "line 2 by a" in merged_a and "line 18 by b" in merged_a
    assert g(repo, "show", "cfn/r1/candidate:b-only.txt") == "b-only.txt from cfn/r1/b"
    for sha in (a, b):
        g(repo, "merge-base", "--is-ancestor", sha, "cfn/r1/candidate")
    assert g(repo, "log", "-1", "--format=%an %cn", "cfn/r1/candidate") == "cfn cfn"
    assert "Cfn-Merged-Branch: cfn/r1/b" in g(repo, "log", "-1", "--format=%B", result.head)

    again = await merge_into(
        repo, "cfn/r1/candidate", ["cfn/r1/a", "cfn/r1/b"], wts / "merge", "again"
    )
    assert again.ok and again.head == result.head
    assert snapshot(repo) == before


async def test_conflicting_merge_reports_hunks_and_leaves_target(repo: Path, wts: Path) -> None:
    before = snapshot(repo)
    await branch_with_edit(repo, wts, "cfn/r1/a", 5, "line 5 as a sees it")
    await branch_with_edit(repo, wts, "cfn/r1/b", 5, "line 5 as b sees it", extra="b-only.txt")
    await branch_with_edit(repo, wts, "cfn/r1/c", 19, "line 19 by c")
    merge_wt = wts / "merge"
    result = await merge_into(
        repo,
        "cfn/r1/candidate",
        ["cfn/r1/a", "cfn/r1/b", "cfn/r1/c"],
        merge_wt,
        "candidate",
        base="main",
    )
    assert not result.ok
    assert result.merged == ["cfn/r1/a", "cfn/r1/c"]
    assert len(result.conflicts) == 1
    conflict = result.conflicts[0]
    assert (conflict.path, conflict.source, conflict.kind) == ("a.txt", "cfn/r1/b", "both modified")
    assert len(conflict.hunks) == 1 and not conflict.truncated
    hunk = conflict.hunks[0]
    assert hunk.startswith("<<<<<<< ") and "=======\n" in hunk
    assert hunk.rstrip().splitlines()[-1].startswith(">>>>>>> ")
    assert "line 5 as a sees it" in hunk and "line 5 as b sees it" in hunk

    # The target holds a and c, nothing of b, and the merge worktree is clean again.
    assert result.head == g(repo, "rev-parse", "cfn/r1/candidate")
    assert "line 5 as a sees it" in g(repo, "show", "cfn/r1/candidate:a.txt")
    assert "b-only.txt" not in g(repo, "ls-tree", "--name-only", "cfn/r1/candidate")
    assert g(merge_wt, "status", "--porcelain") == ""
    assert not (Path(g(merge_wt, "rev-parse", "--absolute-git-dir")) / "MERGE_HEAD").exists()
    # ... and the user's checkout was never touched.
    assert snapshot(repo) == before
    assert g(repo, "status", "--porcelain") == ""


async def test_conflict_hunks_are_capped(repo: Path, wts: Path) -> None:
    await branch_with_edit(repo, wts, "cfn/r1/a", 3, "a" * 5000)
    await branch_with_edit(repo, wts, "cfn/r1/b", 3, "b" * 5000)
    result = await merge_into(
        repo,
        "cfn/r1/candidate",
        ["cfn/r1/a", "cfn/r1/b"],
        wts / "merge",
        "candidate",
        base="main",
        max_conflict_bytes=1000,
    )
    (conflict,) = result.conflicts
    assert conflict.truncated
    assert sum(len(h.encode()) for h in conflict.hunks) < 1100
    assert "[... truncated" in conflict.hunks[0]


async def test_merge_recovers_an_interrupted_merge(repo: Path, wts: Path) -> None:
    await branch_with_edit(repo, wts, "cfn/r1/a", 5, "by a")
    await branch_with_edit(repo, wts, "cfn/r1/b", 5, "by b")
    merge_wt = wts / "merge"
    await ensure_worktree(repo, merge_wt, "cfn/r1/candidate", "main")
    g(merge_wt, "merge", "--no-edit", "cfn/r1/a")
    # A daemon killed mid-merge leaves a conflicted tree behind.
    with pytest.raises(subprocess.CalledProcessError):
        g(merge_wt, "merge", "--no-edit", "cfn/r1/b")
    (merge_wt / "stray.txt").write_text("stray\n")
    result = await merge_into(repo, "cfn/r1/candidate", ["cfn/r1/a"], merge_wt, "again")
    assert result.ok and result.merged == ["cfn/r1/a"]
    assert g(merge_wt, "status", "--porcelain") == ""


async def test_merge_into_needs_a_base_for_a_new_target(repo: Path, wts: Path) -> None:
    with pytest.raises(UnknownRefError, match="no base"):
        await merge_into(repo, "cfn/r1/candidate", [], wts / "merge", "m")
    with pytest.raises(UnknownRefError):
        await merge_into(
            repo, "cfn/r1/candidate", ["cfn/r1/missing"], wts / "merge", "m", base="main"
        )


# ---------------------------------------------------------------------------- diffs


async def test_diff_stat_patch_and_truncation(repo: Path, wts: Path) -> None:
    wt = wts / "impl"
    await ensure_worktree(repo, wt, "cfn/r1/impl", "main")
    replace_line(wt / "a.txt", 1, "first line rewritten")
    (wt / "README").unlink()
    (wt / "src").mkdir()
    (wt / "src" / "mod.py").write_text("".join(f"x{i} = {i}\n" for i in range(40)))
    head = await commit_all(wt, "Agent", "agent@cfn", "change things")
    assert head is not None
    # The user's branch moves on meanwhile; the run's diff must not show that as reverted.
    commit_file(repo, "unrelated.txt", "user work\n", "user commit")

    info = await diff(repo, "main", "cfn/r1/impl", max_patch_bytes=300)
    assert (info.files_changed, info.insertions, info.deletions) == (3, 41, 2)
    assert sorted(info.changed_files) == ["README", "a.txt", "src/mod.py"]
    assert "unrelated.txt" not in info.full_patch.decode()
    assert "src/mod.py" in info.stat and "3 files changed" in info.stat
    assert info.head == head and info.merge_base == g(repo, "rev-parse", "main~1")
    assert info.truncated
    kept, marker = info.patch.rsplit("[... truncated ", 1)
    assert len(kept.encode()) <= 301
    assert int(marker.split()[0]) == len(info.full_patch) - len(kept.encode())
    assert info.full_patch.decode().startswith(kept)
    assert "x39 = 39" in info.full_patch.decode()

    whole = await diff(repo, "main", "cfn/r1/impl", max_patch_bytes=1 << 20)
    assert not whole.truncated and whole.patch == whole.full_patch.decode()
    same = await diff(repo, "main", "main")
    assert (same.files_changed, same.patch, same.changed_files) == (0, "", [])


# ---------------------------------------------------------------------------- review worktree


def writable_files(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if ".git" in dirnames:
            dirnames.remove(".git")
        for name in filenames:
            full = Path(dirpath, name)
            mode = full.lstat().st_mode
            if name != ".git" and stat.S_ISREG(mode) and mode & 0o222:
                found.append(str(full.relative_to(root)))
    return found


async def test_detached_worktree_is_read_only_and_idempotent(repo: Path, wts: Path) -> None:
    first = g(repo, "rev-parse", "HEAD")
    (repo / "bin").mkdir()
    (repo / "bin" / "tool").write_text("#!/bin/sh\n")
    (repo / "bin" / "tool").chmod(0o755)
    (repo / "link").symlink_to("../outside.txt")
    outside = repo.parent / "outside.txt"
    outside.write_text("not ours\n")
    g(repo, "add", "-A")
    g(repo, "commit", "-q", "-m", "tool and link")
    second = g(repo, "rev-parse", "HEAD")

    review = wts / "review"
    assert await add_detached_worktree(repo, review, first) == first
    assert await current_branch(review) is None
    assert g(review, "rev-parse", "HEAD") == first
    assert writable_files(review) == []
    assert (review / ".git").stat().st_mode & stat.S_IWUSR  # git's own file is left alone
    if os.geteuid() != 0:  # root ignores mode bits
        with pytest.raises(PermissionError):
            (review / "a.txt").write_text("edited")

    assert await add_detached_worktree(repo, review, first) == first  # idempotent
    assert await add_detached_worktree(repo, review, "main") == second  # moved on
    assert g(review, "rev-parse", "HEAD") == second
    assert writable_files(review) == []
    assert stat.S_IMODE((review / "bin" / "tool").stat().st_mode) == 0o555
    assert outside.stat().st_mode & stat.S_IWUSR  # the symlink's target is not ours
    assert await is_clean(review)  # mode bits git tracks did not change

    await ensure_worktree(repo, wts / "impl", "cfn/r1/impl", "main")
    with pytest.raises(GitError, match="not a detached one"):
        await add_detached_worktree(repo, wts / "impl", "main")


# ---------------------------------------------------------------------------- cleanup


async def test_cleanup_worktrees_and_branches(repo: Path, wts: Path) -> None:
    before = snapshot(repo)
    await ensure_worktree(repo, wts / "a", "cfn/r1/a", "main")
    await ensure_worktree(repo, wts / "b", "cfn/r1/b", "main")
    await add_detached_worktree(repo, wts / "review", "main")
    g(repo, "branch", "cfn/r10/keep")
    g(repo, "branch", "cfn/r1/nested/deep")
    assert await list_branches(repo, "cfn/r1") == [
        "cfn/r1/a",
        "cfn/r1/b",
        "cfn/r1/nested/deep",
    ]
    assert "main" in await list_branches(repo)

    with pytest.raises(GitError, match=r"cfn/r1/a \(at "):
        await delete_branches(repo, "cfn/r1/")
    assert await list_branches(repo, "cfn/r1") == ["cfn/r1/a", "cfn/r1/b"]

    assert await remove_worktree(repo, wts / "a")
    assert await remove_worktree(repo, wts / "review")  # read-only files and all
    shutil.rmtree(wts / "b")  # gone behind git's back
    assert await remove_worktree(repo, wts / "b")
    assert not await remove_worktree(repo, wts / "a")
    assert not (wts / "a").exists() and not (wts / "review").exists()
    assert [w.path for w in await list_worktrees(repo)] == [str(repo.resolve())]

    await ensure_worktree(repo, wts / "c", "cfn/r1/c", "main")
    shutil.rmtree(wts / "c")  # a stale registration must not block branch cleanup
    assert sorted(await delete_branches(repo, "cfn/r1")) == ["cfn/r1/a", "cfn/r1/b", "cfn/r1/c"]
    assert await list_branches(repo, "cfn") == ["cfn/r10/keep"]
    with pytest.raises(GitError, match="empty prefix"):
        await delete_branches(repo, "/")
    with pytest.raises(GitError, match="main worktree"):
        await remove_worktree(repo, repo)
    assert snapshot(repo) == before


# ---------------------------------------------------------------------------- apply


async def candidate(repo: Path, wts: Path) -> str:
    await branch_with_edit(repo, wts, "cfn/r1/a", 4, "line 4 by a", extra="feature.txt")
    result = await merge_into(
        repo, "cfn/r1/candidate", ["cfn/r1/a"], wts / "merge", "candidate", base="main"
    )
    assert result.ok
    return result.head


async def test_apply_refuses_a_dirty_tree(repo: Path, wts: Path) -> None:
    await candidate(repo, wts)
    head = g(repo, "rev-parse", "HEAD")
    (repo / "notes.txt").write_text("untracked\n")
    (repo / "README").write_text("edited\n")
    for apply in (
        apply_merge(repo, "cfn/r1/candidate"),
        apply_squash(repo, "cfn/r1/candidate", "squash"),
    ):
        with pytest.raises(DirtyTreeError) as info:
            await apply
        assert "README" in str(info.value) and "notes.txt" in str(info.value)
        assert sorted(info.value.dirty_files) == ["README", "notes.txt"]
    assert g(repo, "rev-parse", "HEAD") == head
    assert (repo / "README").read_text() == "edited\n"
    assert not await is_clean(repo)


async def test_apply_merge(repo: Path, wts: Path) -> None:
    cand = await candidate(repo, wts)
    head = g(repo, "rev-parse", "HEAD")
    new = await apply_merge(repo, "cfn/r1/candidate", message="Apply cfn run r1")
    assert new is not None and new == g(repo, "rev-parse", "HEAD")
    assert g(repo, "rev-parse", "HEAD^1", "HEAD^2").splitlines() == [head, cand]
    assert g(repo, "log", "-1", "--format=%s|%an", "HEAD") == "Apply cfn run r1|Repo Owner"
    assert (repo / "feature.txt").exists() and "line 4 by a" in (repo / "a.txt").read_text()
    assert await current_branch(repo) == "main"
    assert await is_clean(repo)
    assert await apply_merge(repo, "cfn/r1/candidate") is None


async def test_apply_squash(repo: Path, wts: Path) -> None:
    cand = await candidate(repo, wts)
    head = g(repo, "rev-parse", "HEAD")
    new = await apply_squash(repo, "cfn/r1/candidate", "Squashed cfn run r1\n\nDetails.")
    assert new is not None and new == g(repo, "rev-parse", "HEAD")
    assert g(repo, "rev-parse", "HEAD^1") == head
    assert g(repo, "rev-list", "--parents", "-1", "HEAD").count(" ") == 1  # one parent
    assert g(repo, "rev-parse", "HEAD^{tree}") == g(repo, "rev-parse", f"{cand}^{{tree}}")
    assert g(repo, "log", "-1", "--format=%B") == "Squashed cfn run r1\n\nDetails."
    assert await is_clean(repo)
    assert await apply_squash(repo, "cfn/r1/candidate", "again") is None
    assert g(repo, "rev-parse", "HEAD") == new
    assert not (repo / ".git" / "SQUASH_MSG").exists()


async def test_apply_conflict_is_rolled_back(repo: Path, wts: Path) -> None:
    await candidate(repo, wts)
    head = commit_file(repo, "a.txt", LINES.replace("line 4\n", "line 4 by the user\n"), "mine")
    before = snapshot(repo)
    with pytest.raises(MergeConflictError, match=r"a\.txt") as info:
        await apply_merge(repo, "cfn/r1/candidate")
    assert info.value.conflicts[0].path == "a.txt"
    assert "line 4 by the user" in info.value.conflicts[0].hunks[0]
    assert snapshot(repo) == before
    with pytest.raises(MergeConflictError):
        await apply_squash(repo, "cfn/r1/candidate", "squash")
    assert snapshot(repo) == before and before[0] == head
    assert not (repo / "feature.txt").exists()


async def test_apply_squash_rolls_back_when_a_hook_refuses(repo: Path, wts: Path) -> None:
    await candidate(repo, wts)
    before = snapshot(repo)
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'lint failed' >&2\nexit 1\n")
    hook.chmod(0o755)
    with pytest.raises(GitError, match="lint failed"):
        await apply_squash(repo, "cfn/r1/candidate", "squash")
    assert snapshot(repo) == before
    assert await apply_squash(repo, "cfn/r1/candidate", "squash", verify=False) is not None


async def test_apply_refuses_detached_head(repo: Path, wts: Path) -> None:
    await candidate(repo, wts)
    g(repo, "checkout", "-q", "--detach")
    with pytest.raises(GitError, match="detached"):
        await apply_merge(repo, "cfn/r1/candidate")


async def test_format_patch(repo: Path, wts: Path, tmp_path: Path) -> None:
    cand = await candidate(repo, wts)
    out = tmp_path / "out" / "run.patch"
    out.parent.mkdir()
    before = snapshot(repo)
    refs = g(repo, "for-each-ref")
    assert await format_patch(repo, "main", "cfn/r1/candidate", out, message="cfn run r1")
    text = out.read_text()
    assert text.startswith("From ") and "Subject: [PATCH] cfn run r1" in text
    assert "feature.txt" in text
    assert snapshot(repo) == before
    assert g(repo, "for-each-ref") == refs

    clone = tmp_path / "clone"
    g(tmp_path, "clone", "-q", str(repo), str(clone))
    g(clone, "am", "-q", str(out), env={"GIT_COMMITTER_NAME": "x", "GIT_COMMITTER_EMAIL": "x@y"})
    assert g(clone, "rev-parse", "HEAD^{tree}") == g(repo, "rev-parse", f"{cand}^{{tree}}")

    empty = tmp_path / "empty.patch"
    assert await format_patch(repo, "cfn/r1/candidate", "main", empty) is None
    assert not empty.exists()
