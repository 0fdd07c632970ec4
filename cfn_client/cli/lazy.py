"""A click group whose subcommands are imported only when used.

``cfnctl status`` imports the status command's module, not the other twenty: the
root group names each command's ``module:attr`` and keeps its one-line help, so
``cfnctl --help`` lists every command without importing one (tests/test_cli_lazy.py
checks the table against the real commands, so the two cannot drift apart).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from gettext import gettext as _
from typing import Any, NamedTuple

import click


class LazyCommand(NamedTuple):
    """Where a subcommand lives and what the root's ``--help`` says of it."""

    #: ``"package.module:attr"``, the click command object.
    target: str
    #: The command's help up to its first blank line (click makes the listing's line
    #: of it), or its ``short_help`` verbatim when ``short`` is set.
    help: str
    short: bool = False

    def load(self) -> click.Command:
        module, _, attr = self.target.partition(":")
        cmd = getattr(importlib.import_module(module), attr)
        if not isinstance(cmd, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return cmd

    def short_help(self, limit: int) -> str:
        """The line ``--help`` shows, exactly as click makes it of the real command."""
        if self.short:
            stand_in = click.Command(None, short_help=self.help)
        else:
            stand_in = click.Command(None, help=self.help)
        return stand_in.get_short_help_str(limit)


class LazyGroup(click.Group):
    """A group taking ``lazy`` subcommands by name; each is imported on first lookup."""

    def __init__(
        self, *args: Any, lazy: Mapping[str, LazyCommand] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, LazyCommand] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = self.commands.get(cmd_name)
        if cmd is None and cmd_name in self.lazy:
            cmd = self.commands[cmd_name] = self.lazy[cmd_name].load()
        return cmd

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            # click >= 8.4 suggests a close name from ``self.commands``, which holds only
            # the commands imported so far: suggest from every name, as a plain group does.
            no_such = getattr(click.exceptions, "NoSuchCommand", None)
            if no_such is None or not isinstance(exc, no_such):
                raise
            names = self.list_commands(ctx)
            raise no_such(exc.command_name, possibilities=names, ctx=exc.ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, made from the table for the commands not imported yet."""
        names = self.list_commands(ctx)
        loaded = {n: self.commands[n] for n in names if n in self.commands}
        rows_of = [n for n in names if n not in loaded or not loaded[n].hidden]
        if not rows_of:
            return
        limit = formatter.width - 6 - max(len(n) for n in rows_of)
        rows = [
            (
                n,
                loaded[n].get_short_help_str(limit)
                if n in loaded
                else self.lazy[n].short_help(limit),
            )
            for n in rows_of
        ]
        with formatter.section(_("Commands")):
            formatter.write_dl(rows)
