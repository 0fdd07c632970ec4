"""Global output flags anywhere on the line: ``cfnctl events --follow --json``.

click only takes a group's options before its subcommand. Before the root group
parses, ``hoist_output_flags`` moves ``--json`` and ``--format X`` found after
the subcommand to the front, unless a command on the path owns an option of that
name itself (``metrics --format prom`` stays ``metrics``'s).
"""

from __future__ import annotations

from collections.abc import Sequence

import click

#: The root options that may be written anywhere; the value says whether one takes a value.
HOISTED: dict[str, bool] = {"--json": False, "--format": True}


def _option(cmd: click.Command, ctx: click.Context, token: str) -> click.Option | None:
    name = token.split("=", 1)[0] if token.startswith("--") else token[:2]
    for param in cmd.get_params(ctx):
        if isinstance(param, click.Option) and name in (*param.opts, *param.secondary_opts):
            return param
    return None


def _takes_value(opt: click.Option | None, token: str) -> bool:
    """Whether ``token`` (an option) consumes the next argument as its value."""
    if opt is None or opt.is_flag or opt.count or opt.nargs == 0:
        return False
    if token.startswith("--"):
        return "=" not in token
    return len(token) == 2  # -t VALUE, not -tVALUE


def hoist_output_flags(root: click.Group, ctx: click.Context, args: Sequence[str]) -> list[str]:
    """``args`` with every hoistable output flag after the subcommand moved to the front."""
    rest: list[str] = []
    hoisted: list[str] = []
    path: list[click.Command] = []  # the commands after the root, as resolved so far
    cmd: click.Command = root
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":  # the end of options: everything after is an argument
            rest.extend(args[i:])
            break
        name = token.split("=", 1)[0]
        if path and name in HOISTED and not any(_option(c, ctx, token) for c in path):
            hoisted.append(token)
            if HOISTED[name] and "=" not in token:
                if i + 1 >= len(args):
                    raise click.UsageError(f"{name} needs a value: json, table or csv")
                hoisted.append(args[i + 1])
                i += 1
            i += 1
            continue
        rest.append(token)
        if token.startswith("-") and token != "-":
            if _takes_value(_option(cmd, ctx, token), token) and i + 1 < len(args):
                rest.append(args[i + 1])
                i += 1
        elif isinstance(cmd, click.Group):
            sub = cmd.get_command(ctx, token)
            if sub is None:  # click reports the unknown command
                rest.extend(args[i + 1 :])
                break
            cmd = sub
            path.append(sub)
        i += 1
    return hoisted + rest
