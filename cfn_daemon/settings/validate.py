"""``python -m cfn_daemon.settings.validate FILE``: check a cfnd config file offline.

``cfnctl config validate FILE`` runs this (cfnctl never imports cfn_daemon): a file
is checked with the very code cfnd loads it with, whether or not a cfnd runs. Only
the file's own content counts (no ``CFN_*`` variables, no runtime overrides). Prints
one JSON document on stdout, ``{"valid": true, "source": FILE}`` or ``{"valid":
false, "source": FILE, "error": {"code", "message", "details"}}``; exits 0 when the
file is valid, 1 when it is not, 2 on bad usage. FILE ``-`` reads stdin, named
``--name`` (default ``<stdin>``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from cfn_client.wire.errors import CfnError, ConfigError
from cfn_daemon.settings.load import load_config

USAGE = "usage: python -m cfn_daemon.settings.validate FILE|- [--name NAME]"


def validate_text(text: str, name: str) -> dict[str, Any]:
    """The validation document of config ``text`` read from ``name``."""
    try:
        load_config(file=Path(name), file_text=text, env={})
    except CfnError as err:
        error = {"code": err.instance_code, "message": err.message, "details": err.details}
        return {"valid": False, "source": name, "error": error}
    return {"valid": True, "source": name}


def _read(file: str) -> str:
    data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{file}: not UTF-8 text (byte {exc.start}); a cfnd config is UTF-8 TOML",
            details={"file": file},
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Validate the file named in ``argv``; the exit status says whether it is valid."""
    args = list(sys.argv[1:] if argv is None else argv)
    name: str | None = None
    if len(args) == 3 and args[1] == "--name":
        name = args.pop(2)
        args.pop(1)
    if len(args) != 1:
        print(USAGE, file=sys.stderr)
        return 2
    file = args[0]
    shown = name or ("<stdin>" if file == "-" else file)
    try:
        doc = validate_text(_read(file), shown)
    except ConfigError as err:
        doc = {
            "valid": False,
            "source": shown,
            "error": {"code": err.instance_code, "message": err.message, "details": err.details},
        }
    except OSError as exc:
        print(f"{file}: {exc.strerror}", file=sys.stderr)
        return 2
    sys.stdout.write(msgspec.json.encode(doc).decode() + "\n")
    return 0 if doc["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
