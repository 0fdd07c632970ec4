"""Least-privilege access: roles, the exec right, the default mapping (docs/SECURITY.md).

The refused caller is real: cfnctl runs as ``nobody`` through ``setpriv``, against a
real cfnd whose socket it can reach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cfn_client.wire.ops import OPS
from cfn_client.wire.protocol import Role
from cfn_daemon.api import roles_doc
from cfn_daemon.api.access import RoleResolver
from cfn_daemon.settings.schema import AuthConfig
from tests.cli_support import SHARED_REDIS_DEFAULT, start_cfnd
from tests.daemon_proc import CFNCTL, CfndProcess

NOBODY = 65534
NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="root")


def test_every_op_declares_a_role() -> None:
    for op, spec in OPS.items():
        assert isinstance(spec.role, Role) and spec.role > Role.none, op


def test_default_mapping() -> None:
    res = RoleResolver(AuthConfig(), socket_gid=0)
    root = res.grant(0, 0)
    assert (root.role, root.exec) == (Role.admin, True)
    # Not root, not cfnd's user, not in the socket's group: refused.
    assert res.grant(NOBODY, NOBODY).role is Role.none
    # In the socket's group: operator, without exec.
    member = res.grant(NOBODY, 0)
    assert (member.role, member.exec) == (Role.operator, False)


def test_users_groups_and_exec() -> None:
    auth = AuthConfig(users={"nobody": "viewer"}, exec=["nobody"])
    assert RoleResolver(auth).grant(NOBODY, NOBODY).role is Role.viewer
    assert RoleResolver(auth).grant(NOBODY, NOBODY).exec
    by_group = AuthConfig(users={"@nogroup": "operator"}, exec=["@nogroup"])
    grant = RoleResolver(by_group).grant(NOBODY, NOBODY)
    assert (grant.role, grant.exec) == (Role.operator, True)
    assert RoleResolver(AuthConfig(default_role="viewer")).grant(NOBODY, NOBODY).role is (
        Role.viewer
    )


@pytest.fixture(scope="module")
def open_cfnd() -> Iterator[CfndProcess]:
    """A cfnd whose socket (mode 0666) any uid can reach: refusals come from cfnd."""
    base = Path(tempfile.mkdtemp(prefix="cfnsec-", dir="/tmp"))
    base.chmod(0o755)
    redis_url = os.environ.get("CFN_TEST_REDIS_URL", SHARED_REDIS_DEFAULT)
    proc = start_cfnd(
        base,
        redis_url,
        config="[daemon]\nsocket_mode = 0o666\n",
        env={"CFN_LIMITS__MAX_SWARMS": "1000"},
    )
    proc.workdir.chmod(0o755)
    try:
        yield proc
    finally:
        try:
            assert proc.stop() == 0, proc.log()[-4000:]
        finally:
            proc.close()
            shutil.rmtree(base, ignore_errors=True)


def cfnctl_as(
    d: CfndProcess, uid: int | None, gid: int, *args: str
) -> subprocess.CompletedProcess[str]:
    """The real cfnctl executable, as ``uid``:``gid`` (None: as this test's user)."""
    who = [] if uid is None else ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp", "CFN_SOCKET": str(d.socket)}
    return subprocess.run(
        [*who, *CFNCTL, *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


@NEEDS_ROOT
def test_unknown_uid_is_refused_with_exit_4(open_cfnd: CfndProcess) -> None:
    out = cfnctl_as(open_cfnd, NOBODY, NOBODY, "status")
    assert out.returncode == 4, out
    assert "needs role viewer" in out.stderr and "has role none" in out.stderr, out.stderr
    denied = [e for e in open_cfnd.log_events() if e.get("event") == "denied"]
    assert any(e.get("uid") == NOBODY for e in denied)


@NEEDS_ROOT
def test_operator_cannot_run_shell_but_admin_can(open_cfnd: CfndProcess) -> None:
    name = f"sec{os.getpid()}"
    made = cfnctl_as(open_cfnd, None, 0, "swarm", "init", "mesh", "4", "--name", name)
    assert made.returncode == 0, made
    try:
        # nobody with the socket's group (root's, cfnd runs as root) as its gid: operator.
        who = cfnctl_as(open_cfnd, NOBODY, 0, "--json", "status")
        assert who.returncode == 0, who
        shell = ("--swarm", name, "run", "--type", "shell", "echo pwned")
        refused = cfnctl_as(open_cfnd, NOBODY, 0, *shell)
        assert refused.returncode == 4, refused
        assert "exec" in refused.stderr and "has role operator" in refused.stderr
        listed = cfnctl_as(open_cfnd, None, 0, "--swarm", name, "--json", "task", "list")
        assert json.loads(listed.stdout)["tasks"] == []
        ok = cfnctl_as(open_cfnd, None, 0, *shell)
        assert ok.returncode == 0, ok
        # Checks are commands too: an operator's run with checks is refused.
        loop = ("--swarm", name, "loop", "start", "--detach", "--check", "true", "x")
        assert cfnctl_as(open_cfnd, NOBODY, 0, *loop).returncode == 4
    finally:
        cfnctl_as(open_cfnd, None, 0, "--swarm", name, "swarm", "destroy", "--force")


def test_security_md_role_table_is_current() -> None:
    doc = roles_doc.DOC.read_text()
    assert roles_doc.render(doc) == doc, "run python -m cfn_daemon.api.roles_doc"
    for op in OPS:
        assert f"| `{op}` |" in doc, op
