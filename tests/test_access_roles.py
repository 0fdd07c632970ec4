"""Least-privilege access: roles, the exec right, the default mapping (docs/SECURITY.md).

The refused caller is real: cfnctl runs as ``nobody`` through ``setpriv``, against a
real cfnd whose socket it can reach.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cfn_client.wire.ops import OPS
from cfn_client.wire.protocol import Role
from cfn_daemon.api import roles_doc
from cfn_daemon.api.access import RoleResolver
from cfn_daemon.core.ratelimit import RateLimiter
from cfn_daemon.settings.schema import AuthConfig
from tests.cli_support import NEEDS_ROOT, cfnctl_as, own_cfnd
from tests.daemon_proc import CFNCTL, CfndProcess

NOBODY = 65534


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


CONFIG = (
    '[daemon]\nsocket_mode = 0o666\n\n[agents]\nrun_as = "nobody"\n\n'
    "[auth]\nrate_per_s = 5.0\nrate_burst = 20\n"
)


@pytest.fixture(scope="module")
def open_cfnd() -> Iterator[CfndProcess]:
    """A cfnd whose socket (mode 0666) any uid can reach: refusals come from cfnd."""
    with own_cfnd("cfnsec-", config=CONFIG, env={"CFN_LIMITS__MAX_SWARMS": "1000"}) as proc:
        proc.workdir.parent.chmod(0o755)
        proc.workdir.chmod(0o755)
        yield proc


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


@NEEDS_ROOT
def test_a_batch_is_refused_whole_when_one_task_needs_exec(open_cfnd: CfndProcess) -> None:
    name = f"secb{os.getpid()}"
    made = cfnctl_as(open_cfnd, None, 0, "swarm", "init", "mesh", "4", "--name", name)
    assert made.returncode == 0, made
    try:
        # Two tasks an operator may queue (a type that does not run its text as code),
        # then one that does: the whole batch is refused, nothing queued.
        lines = [{"text": "a", "type": "coder"}, {"text": "b", "type": "coder"},
                 {"text": "echo pwned", "type": "shell"}]  # fmt: skip
        batch = "".join(json.dumps(line) + "\n" for line in lines)
        refused = cfnctl_as(
            open_cfnd, NOBODY, 0, "--swarm", name, "run", "--batch", "-", input=batch
        )
        assert refused.returncode == 4, refused
        assert "line 3: tasks[2]:" in refused.stderr and "exec" in refused.stderr, refused
        listed = cfnctl_as(open_cfnd, None, 0, "--swarm", name, "--json", "task", "list")
        assert json.loads(listed.stdout)["tasks"] == []
    finally:
        cfnctl_as(open_cfnd, None, 0, "--swarm", name, "swarm", "destroy", "--force")


def test_security_md_role_table_is_current() -> None:
    doc = roles_doc.DOC.read_text()
    assert roles_doc.render(doc) == doc, "run python -m cfn_daemon.api.roles_doc"
    for op in OPS:
        assert f"| `{op}` |" in doc, op


@NEEDS_ROOT
def test_a_task_is_not_the_daemon(open_cfnd: CfndProcess) -> None:
    """A task (run as `nobody`, cfnd is root) finds no secret in its environment, cannot
    read its agent's /proc/PPID/environ, inherits no descriptor, and reaches the socket
    as a viewer at most: it cannot lower the consensus threshold."""
    name = f"sectask{os.getpid()}"
    assert (
        cfnctl_as(open_cfnd, None, 0, "swarm", "init", "mesh", "4", "--name", name).returncode == 0
    )
    sock = open_cfnd.socket
    request = '{"id":1,"op":"config.set","args":{"key":"loop.consensus_threshold","value":"0"}}'
    script = (
        "echo uid=$(id -u); "
        "echo secrets=$(env | grep -c -e ^CFN_AGENT_TOKEN -e ^CFN_REDIS -e ^CFN_SOCKET); "
        "cat /proc/$PPID/environ >/dev/null 2>&1 && echo environ=readable || echo environ=denied; "
        "printf fds=; ls /proc/$$/fd | tr '\\n' ' '; echo; "
        f"echo set=$(echo '{request}' | socat -t5 - UNIX-CONNECT:{sock})"
    )
    try:
        out = cfnctl_as(
            open_cfnd,
            None,
            0,
            "--swarm",
            name,
            "run",
            "--type",
            "shell",
            "--wait",
            "--timeout",
            "40",
            script,
        )
        assert out.returncode == 0, out
        lines = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line[:12])
        assert lines["uid"] == str(NOBODY), out.stdout
        assert lines["secrets"] == "0", out.stdout
        assert lines["environ"] == "denied", out.stdout
        assert lines["fds"].split() == ["0", "1", "2"], out.stdout
        reply = json.loads(lines["set"])
        assert reply["error"]["code"] == "permission_denied", reply
        assert "needs role admin" in reply["error"]["message"], reply
        shown = cfnctl_as(
            open_cfnd, None, 0, "--json", "config", "show", "loop.consensus_threshold"
        )
        assert '"0"' not in shown.stdout and ": 0," not in shown.stdout, shown.stdout
    finally:
        cfnctl_as(open_cfnd, None, 0, "--swarm", name, "swarm", "destroy", "--force")


@NEEDS_ROOT
def test_a_task_under_cfnds_own_uid_is_a_viewer_at_most(open_cfnd: CfndProcess) -> None:
    """Whatever its uid, a process descending from a task (no_new_privs) is capped."""
    cmd = ["setpriv", "--no-new-privs", *CFNCTL, "config", "set", "loop.consensus_threshold", "0"]
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp", "CFN_SOCKET": str(open_cfnd.socket)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 4, out
    assert "has role viewer" in out.stderr, out.stderr
    ok = subprocess.run(
        ["setpriv", "--no-new-privs", *CFNCTL, "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ok.returncode == 0, ok


def test_token_bucket() -> None:
    lim = RateLimiter(rate_per_s=10.0, burst=3)
    assert [lim.take(7, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.take(7, 100.0) == pytest.approx(0.1)
    assert lim.take(8, 100.0) == 0.0  # per key
    assert lim.take(7, 100.11) == 0.0  # refilled
    small = RateLimiter(rate_per_s=1.0, burst=1, max_keys=2)
    for key in range(10):
        small.take(key, 0.0)
    assert len(small._buckets) == 2  # bounded


@NEEDS_ROOT
def test_rate_limited_with_retry_after(open_cfnd: CfndProcess) -> None:
    """uid 4242 (operator by the socket's group) over its bucket: rate_limited with
    retry_after_s; root is exempt."""
    script = (
        "import socket, json, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rwb')\n"
        "for i in range(40):\n"
        "    f.write(json.dumps({'id': i, 'op': 'ping'}).encode() + b'\\n'); f.flush()\n"
        "    r = json.loads(f.readline())\n"
        "    if not r['ok']:\n"
        "        print(json.dumps(r)); break\n"
    )
    py = [sys.executable, "-c", script, str(open_cfnd.socket)]
    out = subprocess.run(
        ["setpriv", "--reuid=4242", "--regid=0", "--clear-groups", *py],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    reply = json.loads(out.stdout)
    assert reply["error"]["code"] == "rate_limited", out
    assert reply["error"]["details"]["retry_after_s"] > 0
    root = subprocess.run(py, capture_output=True, text=True, timeout=30, check=False)
    assert root.stdout == "", root


@NEEDS_ROOT
def test_team_roles_grant_access_and_agent_pools(open_cfnd: CfndProcess, tmp_path: Path) -> None:
    d, name = open_cfnd, f"team{os.getpid()}"
    try:
        made = cfnctl_as(d, None, 0, "team", "role-create", "dev", "Developers", "--grants",
                         "operator", "--agent-type", "researcher")  # fmt: skip
        assert made.returncode == 0, made
        assert cfnctl_as(d, None, 0, "team", "role-create", "dev", "again").returncode == 1
        assert cfnctl_as(d, NOBODY, NOBODY, "status").returncode == 4  # no team role yet
        assert cfnctl_as(d, None, 0, "team", "assign", "nobody", "dev").returncode == 0
        listed = json.loads(cfnctl_as(d, None, 0, "--json", "team", "list").stdout)
        assert listed["members"] == {"nobody": ["dev"]}
        # nobody is an operator now, limited to its pool.
        assert (
            cfnctl_as(d, NOBODY, NOBODY, "swarm", "init", "mesh", "4", "--name", name).returncode
            == 0
        )
        refused = cfnctl_as(d, NOBODY, NOBODY, "--swarm", name, "run", "--type", "shell", "true")
        assert refused.returncode == 4 and "agent pool shell" in refused.stderr, refused
        # team sync from the file format `cfnctl init` writes: dry run, apply, idempotent.
        team_file = tmp_path / "team.toml"
        team_file.write_text(
            '[team]\nname = "t"\n\n[roles.dev]\nrole = "implementer"\ndescription = "Developers"\n'
            'grants = ["operator"]\nagent_types = ["researcher"]\n\n'
            '[roles.qa]\nrole = "validator"\ndescription = "QA"\ngrants = ["viewer"]\n\n'
            '[members]\nnobody = "qa"\n'
        )
        dry = cfnctl_as(d, None, 0, "team", "sync", "--file", str(team_file), "--dry-run")
        assert dry.returncode == 0 and "+ role qa" in dry.stdout, dry
        assert "- member nobody dev" in dry.stdout and "+ member nobody qa" in dry.stdout
        assert "dry run" in dry.stdout
        assert json.loads(cfnctl_as(d, None, 0, "--json", "team", "list").stdout)["members"] == {
            "nobody": ["dev"]
        }
        applied = cfnctl_as(d, None, 0, "--json", "team", "sync", "--file", str(team_file))
        assert json.loads(applied.stdout)["applied"] is True, applied
        again = cfnctl_as(d, None, 0, "team", "sync", "--file", str(team_file))
        assert "no changes" in again.stdout, again
        # qa grants viewer only: nobody reads, but cannot create swarms any more.
        assert cfnctl_as(d, NOBODY, NOBODY, "status").returncode == 0
        again_init = cfnctl_as(
            d, NOBODY, NOBODY, "swarm", "init", "mesh", "4", "--name", "x" + name
        )
        assert again_init.returncode == 4 and "has role viewer" in again_init.stderr
    finally:
        empty = tmp_path / "empty.toml"
        empty.write_text('[team]\nname = "none"\n')
        cfnctl_as(d, None, 0, "team", "sync", "--file", str(empty))
        cfnctl_as(d, None, 0, "--swarm", name, "swarm", "destroy", "--force")
