"""What the audit records and which audited ops are critical (they raise an alert).

Pure: op names, roles and argument values in, decisions and strings out
(tests/test_audit_unit.py). The stream's entries are written by ``api.audit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from cfn_client.wire.protocol import Role
from cfn_daemon.core.redact import redact, redact_text

# Ops a viewer may call that still change something (a one-time login link).
AUDITED_VIEWER_OPS = frozenset({"web.login"})
# Reads that need more than viewer (they are not changes: not audited unless denied).
UNAUDITED_READS = frozenset({"audit.search"})
# A string argument longer than this is cut in the entry (task texts can be megabytes).
ARG_CHARS_MAX = 512
# The whole ``args`` JSON of one entry stays under this.
ARGS_BYTES_MAX = 8192

_json = msgspec.json.Encoder()


def audited(op: str, role: Role) -> bool:
    """True for a mutating op: one that needs operator or more (bar a few reads), or is
    marked so."""
    if op in UNAUDITED_READS:
        return False
    return role >= Role.operator or op in AUDITED_VIEWER_OPS


def _shorten(value: Any, depth: int = 0) -> Any:
    """Long strings cut to ``ARG_CHARS_MAX``, redacted first on a window twice as long, so
    a secret across the cut is still matched whole (and redaction costs O(window), not
    O(text): a task text can be megabytes)."""
    if isinstance(value, str) and len(value) > ARG_CHARS_MAX:
        window = redact_text(value[: 2 * ARG_CHARS_MAX])
        return f"{window[:ARG_CHARS_MAX]}…(+{len(value) - ARG_CHARS_MAX} chars)"
    if depth > 32:
        return "…"
    if isinstance(value, Mapping):
        return {str(k): _shorten(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shorten(v, depth + 1) for v in value]
    return value


def entry_args(raw: Mapping[str, Any]) -> str:
    """The request's arguments as the entry keeps them: redacted (secrets by key name
    and by value pattern, see ``core.redact``), long strings cut, JSON of at most
    ``ARGS_BYTES_MAX`` bytes (else a JSON string of its start, marked as cut)."""
    text = _json.encode(redact(_shorten(dict(raw)))).decode()
    if len(text.encode()) <= ARGS_BYTES_MAX:
        return text
    cut = text.encode()[: ARGS_BYTES_MAX - 64].decode(errors="ignore")
    return _json.encode({"truncated": True, "start": cut}).decode()


def critical(op: str, args: Mapping[str, Any]) -> tuple[str, str] | None:
    """(alert kind, message) when a successful ``op`` is a critical event: a swarm
    destroyed or reset, or an auth change (``auth.*`` config, team roles/members)."""
    swarm = args.get("swarm")
    if op in ("swarm.destroy", "swarm.reset"):
        verb = "destroyed" if op == "swarm.destroy" else "reset"
        return "swarm.destroyed", f"swarm {swarm or '(current)'} {verb}"
    if op in ("config.set", "config.reset"):
        key = args.get("key")
        if op == "config.reset" and key is None:
            return "auth.changed", "every runtime config override reset (auth.* included)"
        if isinstance(key, str) and (key == "auth" or key.startswith("auth.")):
            return "auth.changed", f"{op} {key}"
        return None
    if op == "team.role_create":
        return "auth.changed", f"team role {args.get('name')} created"
    if op == "team.assign":
        return "auth.changed", f"user {args.get('user')} assigned team role {args.get('role')}"
    if op == "team.sync" and not args.get("dry_run"):
        return "auth.changed", "team roles and members replaced (team sync)"
    return None
