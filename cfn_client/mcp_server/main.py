"""``cfn-mcp [--socket PATH] [--timeout S]``: serve cfn's MCP tools on stdin/stdout."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cfn_client.conn.base import DEFAULT_TIMEOUT_S
from cfn_client.wire.paths import default_socket_path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cfn-mcp",
        description="cfnd's coordination operations as MCP tools, on stdio "
        "(register it in .mcp.json; `cfnctl init` does).",
    )
    parser.add_argument(
        "--socket", type=Path, default=None, metavar="PATH",
        help="cfnd's socket [default: $CFN_SOCKET, else cfnctl's default].",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
        help=f"How long to wait for each reply from cfnd [default: {DEFAULT_TIMEOUT_S}].",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.timeout > 0:
        parser.error(f"--timeout must be a positive number of seconds, not {args.timeout}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    args = parse_args(argv)
    try:
        from cfn_client.mcp_server.server import build_server
    except ImportError as exc:  # the SDK is an extra
        raise SystemExit(
            f"cfn-mcp: the MCP SDK is not installed ({exc}); pip install 'cfn[mcp]'"
        ) from None
    build_server(args.socket or default_socket_path(), args.timeout).run("stdio")


if __name__ == "__main__":
    main()
