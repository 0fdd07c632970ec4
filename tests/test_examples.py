"""examples/: the guide's four team use cases as epic files.

Each Claude Code variant must parse and name only agent types that ``cfnctl init
--template team --team-config <its team.toml>`` configures, in the right roles; each
offline variant has the same phases and runs end to end against a real cfnd with the
example agents (``cfnctl init ... --offline``), every phase ending in PROCEED.
"""

from __future__ import annotations

import json
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from cfn_client.cli.commands.epic import epic_spec
from cfn_client.cli.commands.init_toml import table
from cfn_client.cli.main import cfnctl
from cfn_client.wire.schema.workflow import EpicSpec
from cfn_daemon.settings.load import load_config
from tests.cli_support import destroy, new_swarm_name, own_cfnd
from tests.daemon_proc import cfnctl as real_cfnctl

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CASES = ("microservices", "data-ml", "devops", "frontend")


def init_project(case: str, where: Path, *flags: str) -> Path:
    """``cfnctl init`` of ``case``'s team into ``where``/``case``; the project dir."""
    project = where / case
    team = EXAMPLES / case / "team.toml"
    result = CliRunner().invoke(
        cfnctl, ["init", str(project), "--template", "team", "--team-config", str(team), *flags]
    )
    assert result.exit_code == 0, result.output
    return project


def spec(case: str, variant: str) -> EpicSpec:
    data = epic_spec(str(EXAMPLES / case / variant), None)
    return msgspec.convert(data, EpicSpec)


def graph(epic: EpicSpec) -> list[tuple[str, list[str], bool]]:
    return [(p.name, sorted(p.depends_on), p.parallel) for p in epic.phases]


def test_every_use_case_has_both_variants_and_a_readme() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    for case in CASES:
        for name in ("team.toml", "epic.toml", "epic.offline.toml"):
            assert (EXAMPLES / case / name).is_file(), (case, name)
        assert f"examples/{case}/" in readme, case
    # The guide's shapes: a chain of stages, some side by side (data/ML's are in a row).
    for case in CASES:
        phases = spec(case, "epic.toml").phases
        assert len(phases) >= 4 and any(p.depends_on for p in phases), case
        assert any(p.parallel for p in phases) == (case != "data-ml"), case


@pytest.mark.parametrize("case", CASES)
def test_the_claude_variant_names_configured_claude_types(case: str, tmp_path: Path) -> None:
    project = init_project(case, tmp_path)
    types = load_config(file=project / "cfn.toml", env={}).config.agent_types
    epic = spec(case, "epic.toml")
    for phase in epic.phases:
        team = {"implementer": phase.implementers, "validator": phase.validators,
                "owner": [phase.owner] if phase.owner else []}  # fmt: skip
        assert phase.implementers and phase.validators and phase.owner, phase.name
        for role, names in team.items():
            for name in names:
                assert name in types, (case, phase.name, name)
                assert types[name].role == role, (case, phase.name, name)
                assert types[name].kind in ("claude", "check"), (case, name)
        assert any(types[n].kind == "claude" for n in phase.implementers), phase.name
        assert phase.description, phase.name
    # The offline variant is the same plan, for the example agents.
    assert graph(spec(case, "epic.offline.toml")) == graph(epic)


def offline_types(where: Path) -> dict[str, Any]:
    """The agent types of the four offline projects, together (same names, same agents)."""
    merged: dict[str, Any] = {}
    for case in CASES:
        project = init_project(case, where, "--offline")
        doc = tomllib.loads((project / "cfn.toml").read_text())
        for name, spec_ in doc["agent_types"].items():
            assert spec_["kind"] == "command", (case, name)
            merged.setdefault(name, spec_)
    return merged


@pytest.mark.timeout(300)
def test_every_offline_variant_runs_to_proceed(short_tmp: Path) -> None:
    config = table({"agent_types": offline_types(short_tmp)})
    with own_cfnd("cfnex-", config=config) as cfnd:
        swarms = {case: f"{new_swarm_name()}-{case}" for case in CASES}

        def run_epic(case: str) -> dict[str, Any]:
            made = real_cfnctl(cfnd.socket, "swarm", "init", "mesh", "12", "--name", swarms[case])
            assert made.returncode == 0, made.stderr
            ran = real_cfnctl(
                cfnd.socket, "--swarm", swarms[case], "--json", "epic", "start",
                str(EXAMPLES / case / "epic.offline.toml"), timeout_s=240,
            )  # fmt: skip
            assert ran.returncode == 0, ran.stdout + ran.stderr + cfnd.log()[-3000:]
            doc: dict[str, Any] = json.loads(ran.stdout)
            return doc

        try:
            with ThreadPoolExecutor(len(CASES)) as pool:
                epics = dict(zip(CASES, pool.map(run_epic, CASES), strict=True))
        finally:
            for name in swarms.values():
                destroy(cfnd.socket, name)
    for case, doc in epics.items():
        assert doc["status"] == "done", (case, doc)
        phases = {p["name"]: p for p in doc["phases"]}
        assert [p.name for p in spec(case, "epic.offline.toml").phases] == list(phases)
        assert all(p["status"] == "done" and p["decision"] == "PROCEED" for p in phases.values())
