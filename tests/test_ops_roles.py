"""Who may debug agents, export logs and move snapshots: real cfnctl processes run as
``nobody`` (through ``setpriv``) against a real cfnd whose socket any uid can reach.
``agent.debug`` needs operator (agent logs can hold task text); ``logs.export`` (the
audit trail) and snapshots need admin."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator

import pytest

from tests.cli_support import own_cfnd
from tests.daemon_proc import CfndProcess
from tests.test_access_roles import CONFIG, NOBODY, cfnctl_as

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv"
)


@pytest.fixture(scope="module")
def open_cfnd() -> Iterator[CfndProcess]:
    with own_cfnd("cfnops-", config=CONFIG) as proc:
        proc.workdir.parent.chmod(0o755)
        proc.workdir.chmod(0o755)
        yield proc


def test_operator_may_debug_but_not_export_logs_or_snapshots(open_cfnd: CfndProcess) -> None:
    d = open_cfnd
    made = cfnctl_as(d, None, 0, "swarm", "init", "mesh", "4", "--name", "roles")
    assert made.returncode == 0, made
    try:
        # nobody in the socket's group (root's): operator.
        debug = cfnctl_as(d, NOBODY, 0, "--swarm", "roles", "debug", "nope")
        assert debug.returncode == 1 and "no agent 'nope'" in debug.stderr, debug
        for args in (
            ("snapshot", "export", "/tmp/never-written.json"),
            ("snapshot", "import", "/dev/null"),
            ("logs", "export", "--output", "-"),
        ):
            refused = cfnctl_as(d, NOBODY, 0, *args)
            assert refused.returncode == 4, refused
            assert "needs role admin" in refused.stderr and "has role operator" in refused.stderr
        assert not os.path.exists("/tmp/never-written.json")
        # nobody in its own group: no role at all.
        none = cfnctl_as(d, NOBODY, NOBODY, "--swarm", "roles", "debug", "nope")
        assert none.returncode == 4 and "has role none" in none.stderr, none
        # The admin (this test's user) may.
        ok = cfnctl_as(d, None, 0, "--json", "snapshot", "export", "-", "--swarm", "roles")
        assert ok.returncode == 0, ok
        assert [s["id"] for s in json.loads(ok.stdout)["swarms"]] == ["roles"]
    finally:
        cfnctl_as(d, None, 0, "--swarm", "roles", "swarm", "destroy", "--force")
