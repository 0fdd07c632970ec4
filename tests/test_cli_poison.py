"""cfnctl with hostile or mistyped input, in-process against a real cfnd: a specific
message and exit code, never a traceback, and nothing started by mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cfn_client.api import Client
from cfn_client.cli.main import cfnctl as cli
from tests.daemon_proc import CfndProcess


@pytest.fixture
def swarm_cfnd(cfnd: CfndProcess) -> CfndProcess:
    with Client(cfnd.socket, timeout_s=30) as client:
        client.swarm_init(topology="mesh", max_agents=2)
    return cfnd


def run(cfnd: CfndProcess, *args: str) -> Result:
    result = CliRunner().invoke(cli, ["--socket", str(cfnd.socket), *args])
    # A clean exit (SystemExit with its code), never an exception escaping cfnctl.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.output,
        result.exc_info,
    )
    return result


def _nothing_started(cfnd: CfndProcess) -> None:
    with Client(cfnd.socket, timeout_s=30) as client:
        assert client.task_list().tasks == []
        assert client.epic_list().epics == []


def test_non_utf8_task_text_is_refused(swarm_cfnd: CfndProcess) -> None:
    # What Python makes of the argv bytes b"echo \xff" (surrogateescape).
    res = run(swarm_cfnd, "run", "echo \udcff")
    assert res.exit_code == 1, res.output
    assert "not valid UTF-8" in res.output and "args.text" in res.output
    _nothing_started(swarm_cfnd)


def test_events_since_far_future_is_a_usage_error(swarm_cfnd: CfndProcess) -> None:
    res = run(swarm_cfnd, "events", "--since", "99999999999999999999")
    assert res.exit_code == 2, res.output
    assert "after the year 9999" in res.output


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_timeout_is_a_usage_error(swarm_cfnd: CfndProcess, value: str) -> None:
    res = run(swarm_cfnd, "--timeout", value, "ping")
    assert res.exit_code == 2, res.output
    assert "finite" in res.output or "range" in res.output


def test_epic_file_with_unknown_key_names_it(swarm_cfnd: CfndProcess, tmp_path: Path) -> None:
    spec = tmp_path / "epic.toml"
    spec.write_text('name = "e"\nbogus = 1\n[[phases]]\nname = "p"\n')
    res = run(swarm_cfnd, "epic", "start", str(spec), "--detach")
    assert res.exit_code == 2, res.output
    assert "unknown field `bogus`" in res.output and "phases" in res.output
    _nothing_started(swarm_cfnd)


@pytest.mark.parametrize("name", ["nonexistent.toml", "epics/missing.json", "plan.yaml"])
def test_epic_start_of_a_missing_file_starts_nothing(
    swarm_cfnd: CfndProcess, tmp_path: Path, name: str
) -> None:
    res = run(swarm_cfnd, "epic", "start", str(tmp_path / name), "--detach")
    assert res.exit_code == 2, res.output
    assert "no epic file" in res.output
    _nothing_started(swarm_cfnd)
