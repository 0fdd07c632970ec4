"""docs/CLI.md, generated from cfnctl's click commands and the op registry.

``python -m cfn_client.cli.docgen`` rewrites the file; ``tests/test_cli_docs.py`` fails
when the file in the tree is stale. Nothing here is written by hand per command:

- usage, help and options come from click (at a fixed width, so the file does not
  depend on the terminal it was generated in);
- the ``--json`` shapes come from the ops a command calls: the client calls in its
  callback's source (``c.swarm_init(...)``, following the command module's helper
  functions), mapped to ops through ``Client``'s methods and to result Structs
  through ``cfn_client.wire.ops.OPS``; every Struct they mention is listed at the end.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import msgspec.inspect as mi

from cfn_client.api.sync import Client
from cfn_client.wire.ops import OPS

DOC = Path(__file__).resolve().parents[2] / "docs" / "CLI.md"
WIDTH = 100
COMMAND = "python -m cfn_client.cli.docgen"

# The client as command modules name it: `lambda c: c.swarm_init(...)`, `client.status()`.
_CLIENT_CALL = re.compile(r"\b(?:c|client|cfn)\.([a-z_][a-z0-9_]*)\(")
_CALL = re.compile(r"\b([a-z_][a-z0-9_]*)\(")
_OP_NAME = re.compile(r'"([a-z_]+(?:\.[a-z_]+)*)"')


def client_ops() -> dict[str, str]:
    """``Client`` method name -> the op it sends (the first op name in its source)."""
    found: dict[str, str] = {}
    for name, fn in inspect.getmembers(Client, inspect.isfunction):
        if name.startswith("_"):
            continue
        for literal in _OP_NAME.findall(inspect.getsource(fn)):
            if literal in OPS:
                found[name] = literal
                break
    return found


def called_ops(fn: Callable[..., Any], methods: dict[str, str]) -> list[str]:
    """The ops ``fn`` calls, in order of first appearance, through cfnctl helpers too."""
    ops: list[str] = []
    seen: set[Callable[..., Any]] = set()

    def visit(f: Callable[..., Any]) -> None:
        f = inspect.unwrap(f)
        if f in seen:
            return
        seen.add(f)
        try:
            source = inspect.getsource(f)
        except (OSError, TypeError):
            return
        for match in _CLIENT_CALL.finditer(source):
            op = methods.get(match.group(1))
            if op and op not in ops:
                ops.append(op)
        globals_ = getattr(f, "__globals__", {})
        for name in _CALL.findall(source):
            helper = globals_.get(name)
            if inspect.isfunction(helper) and helper.__module__.startswith("cfn_client.cli"):
                visit(helper)

    visit(fn)
    return ops


# --------------------------------------------------------------------------- types


def type_text(t: mi.Type, structs: dict[str, mi.StructType]) -> str:
    """A msgspec type as a short text (``list[AgentInfo]``, ``str | null``); records
    every Struct met in ``structs``."""
    if isinstance(t, mi.StructType):
        name = t.cls.__name__
        if name not in structs:
            structs[name] = t
            for f in t.fields:
                type_text(f.type, structs)
        return name
    if isinstance(t, mi.UnionType):
        return " | ".join(type_text(x, structs) for x in t.types)
    if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return f"list[{type_text(t.item_type, structs)}]"
    if isinstance(t, mi.TupleType):
        return "[" + ", ".join(type_text(x, structs) for x in t.item_types) + "]"
    if isinstance(t, mi.DictType):
        return f"dict[{type_text(t.key_type, structs)}, {type_text(t.value_type, structs)}]"
    if isinstance(t, mi.LiteralType):
        return " | ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in t.values)
    if isinstance(t, mi.EnumType):
        return " | ".join(f'"{m.value}"' for m in t.cls)
    simple = {
        mi.StrType: "str", mi.IntType: "int", mi.FloatType: "float", mi.BoolType: "bool",
        mi.NoneType: "null", mi.AnyType: "any", mi.BytesType: "base64",
    }  # fmt: skip
    for cls, text in simple.items():
        if isinstance(t, cls):
            return text
    return type(t).__name__.removesuffix("Type").lower()


def struct_block(t: mi.StructType, structs: dict[str, mi.StructType]) -> str:
    lines = [f"{t.cls.__name__} {{"]
    for f in t.fields:
        lines.append(f"  {f.encode_name}: {type_text(f.type, structs)}")
    return "\n".join([*lines, "}"])


# --------------------------------------------------------------------------- commands


def help_markdown(text: str | None) -> str:
    """click help text as markdown: ``\\b`` paragraphs verbatim, the others reflowed."""
    if not text:
        return ""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", inspect.cleandoc(text)):
        lines = para.splitlines()
        if lines and lines[0].strip() == "\b":
            out.append("```\n" + "\n".join(lines[1:]) + "\n```")
        else:
            out.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def walk(cmd: click.Command, ctx: click.Context) -> Iterator[tuple[click.Command, click.Context]]:
    """Every visible command under ``cmd`` (itself first), in click's listing order."""
    yield cmd, ctx
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from walk(sub, click.Context(sub, info_name=name, parent=ctx))


def _cell(text: str) -> str:
    # A table cell: one line, and "|" (as in `--role [a|b]`) must not end the cell.
    return " ".join(text.split()).replace("|", "\\|")


def options_table(cmd: click.Command, ctx: click.Context) -> str:
    rows = []
    help_names = set(ctx.help_option_names)
    for param in cmd.get_params(ctx):
        if not isinstance(param, click.Option) or help_names & set(param.opts):
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        flags, help_text = (_cell(text) for text in record)
        rows.append(f"| `{flags}` | {help_text} |")
    if not rows:
        return ""
    return "| option | meaning |\n|---|---|\n" + "\n".join(rows)


def canonical_paths(root: click.Command, ctx: click.Context) -> dict[int, str]:
    """For a command listed under several names (``cfn-loop-epic`` is ``epic start``),
    the one documented in full: the nested name, else the one not spelt ``cfn-...``."""
    paths: dict[int, list[str]] = {}
    for cmd, c in walk(root, ctx):
        paths.setdefault(id(cmd), []).append(c.command_path)

    def rank(path: str) -> tuple[int, bool]:
        return (path.count(" "), not path.startswith("cfnctl cfn-"))

    return {key: max(names, key=rank) for key, names in paths.items()}


def command_section(
    cmd: click.Command,
    ctx: click.Context,
    methods: dict[str, str],
    structs: dict[str, mi.StructType],
    first_path: dict[int, str],
) -> str:
    path = ctx.command_path
    parts = [f"### `{path}`"]
    if first_path[id(cmd)] != path:
        parts.append(f"The same command as `{first_path[id(cmd)]}`.")
        return "\n\n".join(parts)
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    parts.append(f"```\n{path} {usage}\n```")
    if cmd.help:
        parts.append(help_markdown(cmd.help))
    table = options_table(cmd, ctx)
    if table:
        parts.append(table)
    if cmd.callback is not None and not isinstance(cmd, click.Group):
        ops = called_ops(cmd.callback, methods)
        if ops:
            lines = []
            for op in ops:
                spec = OPS[op]
                result = type_text(mi.type_info(spec.result), structs)
                shape = f"one JSON line per `{result}`" if spec.streaming else f"`{result}`"
                lines.append(f"- `{op}` → {shape}")
            head = "`--json`: built from the results of the cfnd ops it calls:\n\n"
            parts.append(head + "\n".join(lines))
        else:
            parts.append("Calls no cfnd op.")
    if cmd.epilog:
        parts.append(help_markdown(cmd.epilog))
    return "\n\n".join(parts)


INTRO = f"""\
# cfnctl reference

<!-- Generated by `{COMMAND}` from the click commands and the op registry.
     Do not edit by hand: change the command's help, then regenerate. -->

Every command of `cfnctl`, its usage, options and what `--json` prints. The
global options (`--socket`, `--swarm`, `--json`, ...) are those of `cfnctl`
itself, the first section. With `--json` a command prints one JSON document (a
followed run or `events --follow` one JSON object per line); the shapes are the
result types of the cfnd ops it calls, listed under each command and defined in
[Result types](#result-types). An error is one document too:

```
{{"ok": false, "error": {{"code": str, "message": str, "details": dict, "exit_code": int}}}}
```

Shell completion: `source <(cfnctl completion bash)` (or `zsh`, `fish`).
"""


def root_context(root: click.Command) -> click.Context:
    """A context of ``root`` with its own settings (``-h`` as well as ``--help``), as
    click's parsing makes it: click caches each command's help option from the first
    context it sees, so a bare ``Context`` would take ``-h`` away for the process."""
    settings = {**root.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    return click.Context(root, info_name="cfnctl", **settings)


def generate(root: click.Command | None = None) -> str:
    """The whole of docs/CLI.md."""
    if root is None:
        from cfn_client.cli.main import cfnctl

        root = cfnctl
    methods = client_ops()
    structs: dict[str, mi.StructType] = {}
    ctx = root_context(root)
    first_path = canonical_paths(root, ctx)
    sections = [command_section(cmd, c, methods, structs, first_path) for cmd, c in walk(root, ctx)]
    types = []
    done: set[str] = set()
    while len(done) < len(structs):  # struct_block may find more; each name once
        for name in sorted(set(structs) - done):
            done.add(name)
            types.append(struct_block(structs[name], structs))
    types.sort()
    body = "\n\n".join(sections)
    listing = "\n\n".join(f"```\n{t}\n```" for t in types)
    return f"{INTRO}\n## Commands\n\n{body}\n\n## Result types\n\n{listing}\n"


def main() -> int:
    DOC.write_text(generate(), encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
