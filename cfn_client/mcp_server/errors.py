"""Tool error results that say what to fix: cfnd's code and message, plus a hint."""

from __future__ import annotations

from cfn_client.wire.errors import CfnError

# What the caller (an LLM) should do about each error code.
HINTS: dict[str, str] = {
    "daemon_unreachable": "start cfnd (`cfnd --config cfn.toml` in the project) and call again",
    "permission_denied": "the user running cfn-mcp must join cfnd's socket group; do not retry",
    "invalid_args": "fix the argument named above and call again",
    "not_found": "list what exists (swarm_list, agent_list, loop_list) and use one of those ids",
    "conflict": "the object is in another state; read its status first",
    "store_unavailable": "Redis is down for a moment: wait a few seconds and retry",
    "shutting_down": "cfnd is stopping: wait for it to be restarted",
    "timeout": "cfnd did not answer in time: check swarm_status, then retry once",
    "invalid_config": "fix the configuration key named above",
}


def error_result_text(err: CfnError) -> str:
    """``error[code]: message`` with the notable details and what to do next."""
    lines = [f"error[{err.instance_code}]: {err.message}"]
    for key in ("expected", "field", "key", "known", "swarm", "run", "agent", "retry_after_s"):
        value = err.details.get(key)
        if value is not None and str(value) not in err.message:
            lines.append(f"{key}: {value}")
    hint = HINTS.get(err.instance_code) or HINTS.get(type(err).code)
    if hint:
        lines.append(f"what to do: {hint}")
    return "\n".join(lines)
