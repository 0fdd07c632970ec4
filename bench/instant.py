"""Instant ``python``-kind agents for bench/latency.py's consensus rounds:

[agent_types.impl]
kind = "python"
entry = "bench.instant:implement"
role = "implementer"

[agent_types.approve]
kind = "python"
entry = "bench.instant:approve"
role = "validator"

Coroutine functions, awaited in the agent process itself (no subprocess, no thread
per task), so a round's figures are cfn's coordination, not agent start-up.
"""

from typing import Any


async def implement(task: Any) -> dict[str, Any]:
    return {"output": "done", "confidence": 1.0}


async def approve(task: Any) -> dict[str, Any]:
    return {"vote": "approve", "confidence": 0.95, "output": "ok", "feedback": []}
