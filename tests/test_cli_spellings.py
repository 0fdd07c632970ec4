"""The guide's spellings of cfnctl commands, each against a real cfnd (issue 11, part 3).

Output flags anywhere on the line (``cfnctl events --follow --json``), ``--format csv``,
and a subcommand that owns ``--format`` keeping it.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cfn_client.api import Client
from cfn_client.wire.errors import InvalidArgs
from tests.cli_support import (
    Swarm,
    _agent_type,
    destroy,
    new_swarm_name,
    run,
    swarm,
    wait_agents,
)
from tests.conftest import SHARED_REDIS
from tests.daemon_proc import CfndProcess

__all__ = ["swarm"]  # fixture, imported for pytest


# --------------------------------------------------------------------------- output flags


def test_json_anywhere_on_the_line(swarm: Swarm) -> None:
    code, out, err = swarm.cli("swarm", "status", "--json")  # at the end
    assert code == 0, err
    assert json.loads(out)["swarm"]["id"] == swarm.name
    code, out, err = swarm.cli("swarm", "--json", "status", swarm.name)  # in the middle
    assert code == 0, err
    assert json.loads(out)["swarm"]["id"] == swarm.name
    code, out, err = swarm.cli("swarm", "list", "--format", "json")
    assert code == 0, err
    assert swarm.name in [s["id"] for s in json.loads(out)["swarms"]]
    code, out, err = swarm.cli("swarm", "list", "--format=json")
    assert code == 0, err
    assert swarm.name in [s["id"] for s in json.loads(out)["swarms"]]
    # An error after the flag still comes as a JSON document.
    code, out, _ = swarm.cli("task", "status", "no-such-task", "--json")
    assert code == 1
    assert json.loads(out)["ok"] is False


def test_readme_events_follow_json(swarm: Swarm) -> None:
    """README's `cfnctl events --follow --json`: JSON lines, one per event."""
    code, out, err = swarm.cli("events", "--json", "--limit", "5")
    assert code == 0, err
    assert json.loads(out)["events"][0]["type"] == "swarm.created"
    # The README's line, as a real process (--since: the past first, so no race with
    # the subscription): the first line is JSON already.
    cfnctl = Path(sys.executable).with_name("cfnctl")
    argv = [str(cfnctl), "--socket", str(swarm.socket), "--swarm", swarm.name]
    argv += ["events", "--follow", "--since", "1h", "--json"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # bounded by the test's timeout
            assert json.loads(line)["type"] == "swarm.created", proc.stderr
        finally:
            proc.terminate()


def test_format_csv_renders_lists_as_rfc4180(swarm: Swarm) -> None:
    code, _, err = swarm.cli("run", "echo hi, there", "--type", "shell", "--wait")
    assert code == 0, err
    code, out, err = swarm.cli("task", "list", "--format", "csv")
    assert code == 0, err
    # (CliRunner's stdout turns CRLF into LF: the line ends are checked below.)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["text"] for r in rows] == ["echo hi, there"]  # the comma is quoted
    assert rows[0]["status"] == "succeeded"
    code, out, err = swarm.cli("--format", "csv", "swarm", "list")
    assert code == 0, err
    assert swarm.name in [r["id"] for r in csv.DictReader(io.StringIO(out))]
    # Not list-like: printed for people as with the table format.
    code, out, err = swarm.cli("swarm", "status", "--format", "csv")
    assert code == 0, err
    assert f"swarm {swarm.name}" in out or swarm.name in out


def test_subcommand_owned_format_stays_with_it(swarm: Swarm) -> None:
    code, out, err = swarm.cli("metrics", "--format", "prom")
    assert code == 0, err
    assert "# TYPE" in out  # Prometheus text, not a root --format error
    code, _, err = swarm.cli("task", "list", "--format", "prom")
    assert code == 2
    assert "'prom' is not one of" in err


def test_json_and_format_disagreeing_is_a_usage_error(shared_cfnd: CfndProcess) -> None:
    code, _, err = run(shared_cfnd.socket, "swarm", "list", "--json", "--format", "csv")
    assert code == 2
    assert "--json and --format csv disagree" in err
    code, _, err = run(shared_cfnd.socket, "swarm", "list", "--format")
    assert code == 2
    assert "--format needs a value" in err


def test_csv_rows_and_cells() -> None:
    from cfn_client.cli.render.csv_out import to_csv

    doc = {"total": 2, "items": [{"a": "x, y", "b": None}, {"a": 'say "hi"', "c": [1]}]}
    assert to_csv(doc) == 'a,b,c\r\n"x, y",,\r\n"say ""hi""",,[1]\r\n'
    assert to_csv({"id": "s", "n": 1}) is None  # nothing listed: printed for people


# --------------------------------------------------------------------------- swarm scale


def test_swarm_scale_above_the_cap_raises_it(shared_cfnd: CfndProcess) -> None:
    """`swarm init mesh 2` then `swarm scale 3`: the user asked for 3 agents, the cap
    becomes 3 (small numbers: each agent is a real process on a 2-core machine)."""
    sock, name = shared_cfnd.socket, new_swarm_name()
    try:
        code, _, err = run(sock, "swarm", "init", "mesh", "2", "--name", name)
        assert code == 0, err
        code, out, err = run(sock, "--swarm", name, "swarm", "scale", "3")
        assert code == 0, err
        assert out.startswith(f"swarm {name}: spawned 3 ")
        code, out, err = run(sock, "--swarm", name, "swarm", "status", "--json")
        assert (code, json.loads(out)["swarm"]["max_agents"]) == (0, 3), err
        with Client(sock, timeout_s=60) as cfn:
            assert len(wait_agents(cfn, name, 3)) == 3  # all three really run
            # Beyond 50 (cfnctl refuses it first, as a usage error): a clear error.
            with pytest.raises(InvalidArgs, match=r"scale target 51: a swarm has at most 50"):
                cfn.swarm_scale(51, swarm=name)
            assert cfn.swarm_status(name).swarm.max_agents == 3
        code, _, err = run(sock, "--swarm", name, "swarm", "scale", "51")
        assert (code, "51 is not in the range 0<=x<=50" in err) == (2, True)
    finally:
        destroy(sock, name)


def test_swarm_init_without_max_agents_takes_the_config_default(
    shared_cfnd: CfndProcess,
) -> None:
    sock, name = shared_cfnd.socket, new_swarm_name()
    try:
        code, out, err = run(sock, "swarm", "init", "--name", name)
        assert code == 0, err
        assert out.strip() == f"swarm {name} created: mesh, balanced, up to 8 agents"
    finally:
        destroy(sock, name)


# --------------------------------------------------------------------------- loop limits

PHASE = 'implementers = ["impl"]\nvalidators = ["check", "check"]\n'


def _runs_limits(swarm: Swarm, out: str) -> list[tuple[int, int]]:
    """(max_loop2, max_loop3) of each phase's run of the epic ``out`` (its --json) shows."""
    epic = json.loads(out)
    assert epic["status"] == "done", epic
    limits = []
    for phase in epic["phases"]:
        code, run_out, err = swarm.cli("loop", "status", phase["run"], "--json")
        assert code == 0, err
        doc = json.loads(run_out)
        run_info = doc.get("run", doc)
        limits.append((run_info["max_loop2"], run_info["max_loop3"]))
    return limits


def test_sprints_and_epics_take_max_loop2_and_max_loop3(swarm: Swarm, tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(f'name = "plan"\n[[phases]]\nname = "one"\nmax_loop2 = 9\n{PHASE}')
    # The guide's spellings: `--max-loop2=5`, `--max-loop3 4`; the command line wins.
    code, out, err = swarm.cli(
        "cfn-loop-sprints", "unused", "--file", str(plan), "--max-loop2=5", "--max-loop3", "4",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    assert _runs_limits(swarm, out) == [(5, 4)]
    code, out, err = swarm.cli("cfn-loop-epic", str(plan), "--max-loop3", "3", "--json")
    assert code == 0, err
    assert _runs_limits(swarm, out) == [(9, 3)]  # the file's max_loop2 stays
    code, _, err = swarm.cli("cfn-loop-epic", str(plan), "--max-loop2", "0")
    assert code == 2
    assert "0 is not in the range 1<=x<=100" in err


# --------------------------------------------------------------------------- current swarm


def test_one_current_swarm_as_kubectl_has_one_context(
    cfnd_factory: Callable[..., CfndProcess], context_file: Path
) -> None:
    sock = cfnd_factory("--redis-url", SHARED_REDIS).socket
    assert run(sock, "swarm", "init", "mesh", "4", "--name", "a")[0] == 0
    assert run(sock, "swarm", "init", "mesh", "4", "--name", "b")[0] == 0
    # The last one initialised is current: no --swarm, no "several swarms" error.
    code, _, err = run(sock, "run", "echo to-b", "--type", "shell")
    assert code == 0, err
    code, out, err = run(sock, "--swarm", "b", "--json", "task", "list")
    assert [t["text"] for t in json.loads(out)["tasks"]] == ["echo to-b"], err
    # `swarm use` switches, checking the swarm exists; `swarm list` marks the current one.
    code, out, err = run(sock, "swarm", "use", "a")
    assert (code, out.strip()) == (0, "swarm a is now the current swarm"), err
    code, _, err = run(sock, "swarm", "use", "nope")
    assert (code, "error[not_found]: no swarm 'nope'" in err) == (1, True)
    code, out, _ = run(sock, "swarm", "list")
    marked = [line.split()[1] for line in out.splitlines()[1:] if line.startswith("*")]
    assert (code, marked) == (0, ["a"])
    code, out, _ = run(sock, "--json", "swarm", "list")
    assert json.loads(out)["current"] == "a"
    code, out, _ = run(sock, "task", "list")
    assert (code, out.strip()) == (0, "no tasks")  # a's, not b's
    # --swarm and $CFN_SWARM still win over the context.
    code, out, _ = run(sock, "task", "list", env={"CFN_SWARM": "b"})
    assert (code, len(out.splitlines())) == (0, 2)
    assert json.loads(run(sock, "--swarm", "b", "--json", "swarm", "list")[1])["current"] == "b"
    # Initialising a name that exists says so, instead of adding another.
    code, _, err = run(sock, "swarm", "init", "mesh", "4", "--name", "a")
    assert code == 1
    assert "swarm a exists; use `cfnctl swarm use a`, or --force to replace it" in err
    # Kept per daemon socket, in the session's private file (never the real home).
    saved = json.loads(context_file.read_text())["current"]
    assert saved[str(sock.absolute())] == "a"
    # The current swarm destroyed behind cfnctl's back: fall back, and say so.
    with Client(sock, timeout_s=60) as cfn:
        cfn.swarm_destroy("a", force=True)
    code, out, err = run(sock, "task", "list")
    assert (code, len(out.splitlines())) == (0, 2)  # b's task
    assert "the current swarm a (in " in err
    assert "no longer exists; using the only swarm, b" in err
    # `swarm destroy` of the current one forgets it.
    assert run(sock, "swarm", "use", "b")[0] == 0
    assert run(sock, "swarm", "destroy", "--force")[0] == 0
    assert str(sock.absolute()) not in json.loads(context_file.read_text())["current"]


def test_context_file_keeps_daemons_apart_and_survives_damage(tmp_path: Path) -> None:
    from cfn_client.cli import context

    path = tmp_path / "sub" / "context.json"
    assert context.current_swarm(Path("/run/a.sock"), path) is None  # no file yet
    context.use_swarm(Path("/run/a.sock"), "one", path)
    context.use_swarm(Path("/run/b.sock"), "two", path)
    assert context.current_swarm(Path("/run/a.sock"), path) == "one"
    assert context.current_swarm(Path("/run/b.sock"), path) == "two"
    path.write_text("{ not json")
    assert context.current_swarm(Path("/run/a.sock"), path) is None
    env = {"XDG_CONFIG_HOME": "/x"}
    assert context.context_path(env) == Path("/x/cfn/context.json")
    assert context.context_path({"CFN_CONTEXT_FILE": "/y.json", **env}) == Path("/y.json")


# --------------------------------------------------------------------------- config validate


def test_config_validate_file_works_with_no_daemon(tmp_path: Path) -> None:
    down = tmp_path / "no-cfnd.sock"  # nothing listens here
    good = tmp_path / "good.toml"
    good.write_text("[swarm]\nmaxAgents = 12\n[loop]\ngate_threshold = 0.8\n")
    code, out, err = run(down, "config", "validate", str(good))
    assert (code, out.strip()) == (0, f"{good}: valid"), err
    bad = tmp_path / "bad.toml"
    bad.write_text("[loop]\ngate_threshold = 2\n")
    code, _, err = run(down, "config", "validate", str(bad))
    assert code == 1
    assert f"{bad}: key loop.gate_threshold = 2 is invalid" in err
    broken = tmp_path / "broken.toml"
    broken.write_text("[loop]\nmax_loop2 = 3\n[swarm\n")
    code, out, _ = run(down, "config", "validate", str(broken), "--json")
    doc = json.loads(out)
    assert (code, doc["error"]["code"]) == (1, "invalid_config")
    assert "(at line 3, column 7)" in doc["error"]["message"]
    code, _, err = run(down, "config", "validate", "-", input="[swarm]\nmaxAgent = 3\n")
    assert code == 1
    assert "<stdin>: key swarm.maxAgent" in err
    assert "did you mean swarm.maxAgents" in err
    # Without a FILE it is the running daemon's config: that one needs cfnd.
    code, _, err = run(down, "config", "validate")
    assert (code, "error[" in err) == (3, True)


# --------------------------------------------------------------------------- run "TEXT"


def test_default_type_choice() -> None:
    from cfn_daemon.agent.types import default_type
    from cfn_daemon.settings.schema import AgentTypeConfig

    impl = AgentTypeConfig(kind="command", exec=["x"], role="implementer")
    check = AgentTypeConfig(kind="command", exec=["x"], role="validator")
    shell = AgentTypeConfig(kind="shell")
    assert default_type("writer", {"coder": impl}) == "writer"  # [swarm] default_type
    assert default_type(None, {"a": impl, "coder": impl}) == "coder"
    assert default_type(None, {"sh": shell, "check": check, "impl": impl}) == "impl"
    assert default_type(None, {"sh": shell}) == "coder"  # the built-in (Claude Code)


def test_run_text_uses_the_default_type_and_shell_only_when_asked(
    cfnd_factory: Callable[..., CfndProcess], tmp_path: Path
) -> None:
    conf = tmp_path / "cfnd.toml"
    conf.write_text(
        '[swarm]\ndefault_type = "writer"\n\n'
        + _agent_type("writer", "implementer.py", "implementer", {"EXAMPLE_CONFIDENCE": "0.9"})
    )
    sock = cfnd_factory("--config", str(conf), "--redis-url", SHARED_REDIS).socket
    assert run(sock, "swarm", "init", "mesh", "4", "--name", "r")[0] == 0
    code, out, err = run(sock, "--json", "run", "Build a REST API for user management", "--wait")
    doc = json.loads(out)
    assert (code, doc["type"], doc["status"]) == (0, "writer", "succeeded"), err
    assert "not found" not in doc["result"]["output"]  # no `sh -c "Build ..."`
    code, out, err = run(sock, "run", "echo from-shell", "--type", "shell", "--wait")
    assert (code, out) == (0, "from-shell\n"), err


def test_run_text_says_at_once_when_the_default_types_cli_is_missing(
    cfnd_factory: Callable[..., CfndProcess], tmp_path: Path
) -> None:
    conf = tmp_path / "cfnd.toml"
    conf.write_text('[agent_types.coder]\nkind = "claude"\nbinary = "claude-not-installed-x"\n')
    sock = cfnd_factory("--config", str(conf), "--redis-url", SHARED_REDIS).socket
    assert run(sock, "swarm", "init", "mesh", "4", "--name", "r")[0] == 0
    code, _, err = run(sock, "run", "Build a REST API for user management", "--wait")
    assert code == 1
    assert "the default agent type (swarm.default_type), 'coder', which cannot run here" in err
    assert "'claude-not-installed-x' not found on PATH" in err
    assert "install Claude Code (npm install -g @anthropic-ai/claude-code)" in err
    assert "--type shell runs the text as a shell command" in err
    code, out, _ = run(sock, "task", "list")
    assert (code, out.strip()) == (0, "no tasks")  # refused before queueing
