"""docs/CLI.md is generated from cfnctl's click commands; it must be up to date."""

from __future__ import annotations

import re

import click
import msgspec.inspect as mi
from click.testing import CliRunner

from cfn_client.cli import docgen
from cfn_client.cli.main import cfnctl
from cfn_client.wire.schema.loop import RunInfo


def sections() -> dict[str, str]:
    text = docgen.DOC.read_text(encoding="utf-8")
    parts = text.split("\n### ")[1:]
    return {p.split("`")[1]: p for p in parts}


def test_cli_md_is_up_to_date() -> None:
    assert docgen.generate() == docgen.DOC.read_text(encoding="utf-8"), (
        f"docs/CLI.md is stale: run {docgen.COMMAND}"
    )


def test_every_command_is_documented_with_usage_and_options() -> None:
    documented = sections()
    ctx = docgen.root_context(cfnctl)
    paths = [c.command_path for _, c in docgen.walk(cfnctl, ctx)]
    assert len(paths) > 50
    assert set(paths) == set(documented)
    init = documented["cfnctl swarm init"]
    assert "cfnctl swarm init [OPTIONS] [TOPOLOGY] [MAX_AGENTS]" in init
    assert "`--strategy [balanced\\|performance\\|reliability]`" in init
    assert "`swarm.init` → `SwarmInfo`" in init
    assert "The same command as `cfnctl epic start`." in documented["cfnctl cfn-loop-epic"]
    assert "one JSON line per `Event`" in documented["cfnctl events"]
    # Every type a command's JSON is made of is defined in the file.
    text = docgen.DOC.read_text(encoding="utf-8")
    named = set(re.findall(r"→ (?:one JSON line per )?`(\w+)`", text))
    defined = set(re.findall(r"^(\w+) \{$", text, flags=re.M))
    assert named and named <= defined


def test_the_ops_of_a_command_are_found_in_its_source() -> None:
    methods = docgen.client_ops()
    assert methods["swarm_init"] == "swarm.init"
    assert methods["loop_follow"] == "loop.follow"

    def ops(*path: str) -> list[str]:
        cmd: click.Command = cfnctl
        for name in path:
            assert isinstance(cmd, click.Group)
            sub = cmd.get_command(click.Context(cmd), name)  # the root imports it on demand
            assert sub is not None
            cmd = sub
        assert cmd.callback is not None
        return docgen.called_ops(cmd.callback, methods)

    assert ops("agent", "list") == ["agent.list"]
    assert ops("loop", "status") == ["loop.status"]
    # Through the command module's helper (start_epic).
    assert ops("epic", "start") == ["epic.start", "events.follow", "epic.status"]
    assert ops("init") == []


def test_types_read_as_json() -> None:
    structs: dict[str, mi.StructType] = {}
    assert docgen.type_text(mi.type_info(RunInfo), structs) == "RunInfo"
    block = docgen.struct_block(structs["RunInfo"], structs)
    assert "  phase: str | null" in block
    assert "  implementers: list[str]" in block


def test_generating_leaves_the_commands_as_they_were() -> None:
    # click caches help options from the contexts docgen makes: -h must still work.
    docgen.generate()
    for args in (["cfn-loop", "-h"], ["loop", "status", "-h"], ["-h"]):
        result = CliRunner().invoke(cfnctl, args)
        assert result.exit_code == 0, (args, result.output)
        assert result.output.startswith("Usage: cfnctl"), args
