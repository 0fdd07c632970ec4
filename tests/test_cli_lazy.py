"""The root group imports subcommands on demand: its table must say what the real
commands say, so ``cfnctl --help`` (made from the table) cannot drift from them."""

from __future__ import annotations

from collections.abc import Callable

import click
import pytest
from click.testing import CliRunner

from cfn_client.cli.lazy import LazyCommand, LazyGroup
from cfn_client.cli.main import COMMANDS, cfnctl

WIDTHS = (40, 60, 80, 100, 120, 200)


def real(name: str) -> click.Command:
    cmd = COMMANDS[name].load()
    assert cmd is cfnctl.get_command(click.Context(cfnctl), name)
    return cmd


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_table_says_what_the_command_says(name: str) -> None:
    cmd = real(name)
    assert not cmd.hidden and not cmd.deprecated  # the listing would differ
    entry = COMMANDS[name]
    assert entry.short == bool(cmd.short_help), f"{name}: short_help set? {cmd.short_help!r}"
    for limit in range(10, 160):
        assert entry.short_help(limit) == cmd.get_short_help_str(limit), (
            f"the line of `{name}` in main.COMMANDS no longer matches its help; "
            f"copy it from the command: {cmd.get_short_help_str(10_000)!r}"
        )


def listing(group: click.Group, width: int, fmt: Callable[..., None]) -> str:
    formatter = click.HelpFormatter(width=width)
    fmt(group, click.Context(group, info_name="cfnctl", terminal_width=width), formatter)
    return formatter.getvalue()


@pytest.mark.parametrize("width", WIDTHS)
def test_root_help_is_what_click_makes_of_the_real_commands(width: int) -> None:
    untouched = LazyGroup("cfnctl", lazy=COMMANDS)  # nothing imported: all from the table
    from_table = listing(untouched, width, LazyGroup.format_commands)
    assert not untouched.commands
    from_commands = listing(cfnctl, width, click.Group.format_commands)  # imports them all
    assert from_table == from_commands
    assert from_table.startswith("Commands:")
    assert listing(cfnctl, width, LazyGroup.format_commands) == from_commands


def test_the_table_names_every_command_once() -> None:
    ctx = click.Context(cfnctl)
    assert cfnctl.list_commands(ctx) == sorted(COMMANDS)
    assert {"status", "loop", "cfn-loop", "cfn-loop-epic", "completion"} <= set(COMMANDS)


def test_an_unknown_command_is_a_usage_error() -> None:
    assert cfnctl.get_command(click.Context(cfnctl), "no-such") is None
    with pytest.raises(TypeError, match="not a click command"):
        LazyCommand("cfn_client.cli.main:COMMANDS", "x").load()


def test_a_mistyped_command_is_matched_against_every_name() -> None:
    # click suggests close names from the commands it holds; the lazy root holds few.
    untouched = LazyGroup("cfnctl", lazy=COMMANDS)
    result = CliRunner().invoke(untouched, ["stat"])
    assert result.exit_code == 2
    assert "No such command 'stat'." in result.output
    if hasattr(click.exceptions, "NoSuchCommand"):  # click >= 8.4 suggests
        assert "Did you mean 'status'?" in result.output
    assert not untouched.commands
