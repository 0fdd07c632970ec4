"""The pinned-key store: pending / void entries, trust on first use, file modes."""

from __future__ import annotations

import stat
from pathlib import Path

from cfn_daemon.swarm.keyring import KeyRing
from cfn_daemon.util.signing import Signer


def test_a_pending_local_agent_cannot_have_a_key_pinned_from_redis(tmp_path: Path) -> None:
    ring, real, forged = KeyRing(tmp_path), Signer(), Signer()
    ring.expect("s", "a1")
    assert ring.key_for("s", "a1", forged.public) == ("pending", None)
    assert ring.get("s", "a1") is None
    assert ring.pin("s", "a1", real.public, replace=True)  # the pipe delivers
    assert ring.key_for("s", "a1", forged.public) == ("pinned", real.public)


def test_a_key_that_never_came_leaves_the_entry_void(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path)
    ring.expect("s", "a1")
    ring.void("s", "a1")
    assert ring.key_for("s", "a1", Signer().public) == ("void", None)


def test_a_remote_agent_is_pinned_on_first_use_only(tmp_path: Path) -> None:
    ring, first, second = KeyRing(tmp_path), Signer(), Signer()
    assert ring.key_for("s", "r1", "") == ("none", None)
    assert ring.key_for("s", "r1", first.public) == ("pinned", first.public)
    assert ring.key_for("s", "r1", second.public) == ("pinned", first.public)


def test_entries_are_owner_only(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path)
    ring.pin("s", "a1", Signer().public, replace=True)
    for path in (ring.root, ring.root / "s"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert stat.S_IMODE((ring.root / "s" / "a1").stat().st_mode) == 0o600
