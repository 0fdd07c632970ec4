"""``cfnctl init``: a newcomer's path from an empty directory to a PROCEED run, and
the promises that init keeps about the files around it."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from cfn_daemon.settings.load import load_config
from tests.daemon_proc import CFNCTL, CfndProcess

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "cfn_client" / "cli" / "templates"


def cfnctl(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CFN_")}
    full_env.update(env or {})
    return subprocess.run(
        [*CFNCTL, *args], cwd=cwd, capture_output=True, text=True, env=full_env,
        timeout=120, check=False,
    )  # fmt: skip


def bash_lines(markdown: str) -> list[str]:
    """The lines of the ```bash blocks of a slash command."""
    lines: list[str] = []
    inside = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside:
            lines.append(line)
    return lines


def test_every_template_validates_with_cfnds_loader(tmp_path: Path) -> None:
    team = tmp_path / "team.json"
    team.write_text(
        json.dumps(
            {"roles": {"frontend-dev": {"role": "implementer", "description": "React work"}}}
        )
    )
    cases = [
        ["--template", "coordination"], ["--template", "minimal"],
        ["--template", "team", "--team-config", str(team)], ["--offline"], ["--redis-backend"],
    ]  # fmt: skip
    for i, flags in enumerate(cases):
        out = cfnctl("init", f"p{i}", *flags, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        loaded = load_config(file=tmp_path / f"p{i}" / "cfn.toml", env={})
        types = loaded.config.agent_types
        # The loop's default (medium) team must resolve to configured types.
        assert {"coder", "reviewer", "tester", "security-specialist"} <= set(types), flags
        assert any(t.role == "owner" for t in types.values())
        assert loaded.config.redis.url is None  # the embedded Redis
    coordination = load_config(file=tmp_path / "p0" / "cfn.toml", env={}).config.agent_types
    assert coordination["coder"].kind == "claude"
    assert coordination["reviewer"].kind == "claude"
    assert coordination["reviewer"].role == "validator"
    assert coordination["tester"].kind == "check"
    assert coordination["tester"].exec == ["python", "-m", "pytest", "-q"]
    assert coordination["lint"].exec == ["ruff", "check", "."]
    assert coordination["product-owner"].role == "owner"
    team_types = load_config(file=tmp_path / "p2" / "cfn.toml", env={}).config.agent_types
    assert team_types["frontend-dev"].kind == "claude"
    assert "React work" in " ".join(team_types["frontend-dev"].args)
    team_file = tomllib.loads((tmp_path / "p2" / "config" / "team.toml").read_text())
    assert team_file["roles"]["frontend-dev"]["description"] == "React work"
    mcp = json.loads((tmp_path / "p0" / ".mcp.json").read_text())
    assert mcp["mcpServers"]["cfn"]["command"] == "cfn-mcp"


def test_relative_paths_are_taken_from_where_cfnd_starts(tmp_path: Path) -> None:
    text = '[daemon]\nsocket = ".cfn/cfnd.sock"\nstate_dir = ".cfn/state"\n'
    cfg = load_config(file_text=text, env={}).config
    assert cfg.socket_path() == Path.cwd() / ".cfn" / "cfnd.sock"
    assert cfg.state_path() == Path.cwd() / ".cfn" / "state"


def test_offline_agents_are_the_examples() -> None:
    for name in ("implementer", "validator", "owner"):
        bundled = (TEMPLATES / "agents" / f"{name}.py.tmpl").read_text()
        assert bundled == (ROOT / "examples" / "agents" / f"{name}.py").read_text(), name


@pytest.mark.timeout(240)
def test_newcomer_path_init_cfnd_and_the_cfn_loop_command_proceeds(short_tmp: Path) -> None:
    out = cfnctl("init", "demo", "--offline", cwd=short_tmp)
    assert out.returncode == 0, out.stderr
    demo = short_tmp / "demo"
    assert f"wrote {Path('demo') / 'cfn.toml'}" in out.stdout
    slash = (demo / ".claude" / "commands" / "cfn-loop.md").read_text()
    assert "$ARGUMENTS" in slash
    for code in (0, 1, 2, 3, 4, 5, 6, 7):  # what to do on each of cfnctl's exit statuses
        assert f"\n| {code} |" in slash, code
    assert "loop approve RUN" in slash and "loop reject RUN" in slash
    # `cfnd --config cfn.toml` in the project: the config's own (relative) socket and
    # state dir, the embedded Redis.
    cfnd = CfndProcess(short_tmp / "proc", ["--config", "cfn.toml"], cwd=demo, own_paths=False)
    cfnd.start(timeout_s=60)
    assert (demo / ".cfn" / "cfnd.sock").is_socket()
    assert (demo / ".cfn" / "state" / "redis").is_dir()
    assert (demo / ".cfn" / ".gitignore").read_text().endswith("*\n")
    try:
        lines = bash_lines(slash)
        swarm_init = next(line for line in slash.splitlines() if "swarm init" in line)
        swarm_cmd = shlex.split(swarm_init[swarm_init.index("`") + 1 : swarm_init.rindex("`")])
        assert swarm_cmd[0] == "cfnctl"
        created = cfnctl(*swarm_cmd[1:], cwd=demo)
        assert created.returncode == 0, created.stdout + created.stderr
        loop_line = next(line for line in lines if line.startswith("cfnctl") and " loop " in line)
        argv = shlex.split(loop_line.replace("$ARGUMENTS", "add a health endpoint"))
        ran = cfnctl(*argv[1:], cwd=demo)
        assert ran.returncode == 0, ran.stdout + ran.stderr + cfnd.log()[-3000:]
        docs = [json.loads(line) for line in ran.stdout.splitlines() if line.strip()]
        final = docs[-1]
        assert final["status"] == "done"
        assert final["decision"] == "PROCEED"
        assert any(d.get("type") == "loop.vote" for d in docs)
        assert cfnd.stop() == 0
    finally:
        cfnd.close()


def test_no_overwrite_without_force_and_claude_md_is_merged(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "CLAUDE.md").write_text("# My project\n\nHouse rules.\n")
    assert cfnctl("init", "proj", cwd=tmp_path).returncode == 0
    claude_md = (proj / "CLAUDE.md").read_text()
    assert claude_md.startswith("# My project\n\nHouse rules.\n")
    assert claude_md.count("<!-- cfn:begin") == 1
    (proj / "cfn.toml").write_text("# mine\n")
    (proj / ".mcp.json").write_text("{}\n")
    again = cfnctl("init", "proj", cwd=tmp_path)
    assert again.returncode == 0
    assert "kept" in again.stdout and "cfn.toml" in again.stdout
    assert (proj / "cfn.toml").read_text() == "# mine\n"
    assert (proj / ".mcp.json").read_text() == "{}\n"
    assert (proj / "CLAUDE.md").read_text() == claude_md  # the section once, not twice
    forced = cfnctl("init", "proj", "--force", cwd=tmp_path)
    assert forced.returncode == 0
    assert "wrote" in forced.stdout
    assert (proj / "cfn.toml").read_text() != "# mine\n"
    assert (proj / "CLAUDE.md").read_text() == claude_md


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_nothing_outside_dir_is_touched(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude" / "CLAUDE.md").write_text("user-wide rules\n")
    (home / ".claude.json").write_text("{}\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "CLAUDE.md").write_text("parent rules\n")
    before_home, before_work = snapshot(home), snapshot(work)
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    out = cfnctl("init", "demo", "--force", cwd=work, env=env)
    assert out.returncode == 0, out.stderr
    assert snapshot(home) == before_home
    after = snapshot(work)
    assert {k: v for k, v in after.items() if not k.startswith("demo/")} == before_work
    written = {
        line.split(" ", 1)[1] for line in out.stdout.splitlines() if line.startswith("wrote")
    }
    assert written == {k for k in after if k.startswith("demo/")}
    # A symlinked directory pointing out of DIR is refused, not followed.
    evil = work / "evil"
    evil.mkdir()
    (evil / ".claude").symlink_to(home / ".claude")
    refused = cfnctl("init", "evil", cwd=work, env=env)
    assert refused.returncode != 0
    assert "outside" in refused.stderr
    assert snapshot(home) == before_home


def test_a_claude_md_that_is_not_text_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "CLAUDE.md").write_bytes(b"\xff\xfe binary")
    out = cfnctl("init", "p", cwd=tmp_path)
    assert out.returncode == 1
    assert "not UTF-8" in out.stderr
    assert (tmp_path / "p" / "CLAUDE.md").read_bytes() == b"\xff\xfe binary"
    assert not (tmp_path / "p" / "cfn.toml").exists()  # nothing written half-way
