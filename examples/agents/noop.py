"""A `python`-kind example agent that does nothing (used by bench/throughput.py):

[agent_types.noop]
kind = "python"
entry = "examples.agents.noop:run"
"""

from typing import Any


def run(task: Any) -> dict[str, Any]:
    return {"output": "", "confidence": 1.0}
