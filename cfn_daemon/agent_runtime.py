"""``cfn-agent``: the worker runtime (built by the swarms/agents issue)."""

from __future__ import annotations

import sys


def main() -> None:
    """Placeholder entry point until the agent runtime lands."""
    print("cfn-agent: not implemented yet (see the swarms/agents issue)", file=sys.stderr)
    sys.exit(2)
