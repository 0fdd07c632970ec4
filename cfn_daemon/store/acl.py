"""Redis ACL rules for cfn's three users, generated from the key names in ``keys.py``.

* ``coordinator`` (cfnd): every key and channel under the prefix, every command but
  the dangerous ones, plus the few of those cfnd uses (INFO, CONFIG GET for ``status``,
  ACL SETUSER / DELUSER to give each local agent a user of its own).
* ``agent`` (cfn-agent): its own swarm's keys (``<prefix>:{<swarm>}:*``) and channels,
  read-only ``<prefix>:agent_types``; data, stream, pub/sub and script commands only:
  no admin or dangerous command (FLUSHALL, CONFIG, KEYS, ACL, DEBUG, ...).
* ``monitor``: read-only on every cfn key, plus INFO, PING and SLOWLOG / LATENCY.

``deploy/redis/users.acl`` is ``python -m cfn_daemon.store.acl`` (a test keeps the two
equal); cfnd makes per-agent users with ``agent_rules`` (``ensure_agent_user``).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
from collections.abc import Mapping
from typing import Any

from cfn_daemon.store.keys import Keys

EXAMPLE_SWARM = "main"
AGENT_USER_PREFIX = "agent-"

# Commands an agent may not run even though their category is allowed.
_AGENT_DENIED = ("-script|flush", "-script|kill", "-function", "-select", "-swapdb")


def key_patterns(keys: Keys, swarm: str | None = None) -> list[str]:
    """``~pattern`` rules: one swarm's keys, or (None) every key under the prefix."""
    if swarm is None:
        return [f"~{keys.prefix}:*"]
    return [f"~{_swarm_glob(keys, swarm)}"]


def channel_patterns(keys: Keys, swarm: str | None = None) -> list[str]:
    """``&pattern`` rules: one swarm's channels (notify, events), or every cfn channel."""
    if swarm is None:
        return [f"&{keys.prefix}:*"]
    return [f"&{_swarm_glob(keys, swarm)}"]


def _swarm_glob(keys: Keys, swarm: str) -> str:
    # keys.notify(s) == "<prefix>:{s}:notify": everything of a swarm shares "<prefix>:{s}:".
    base = keys.swarm_state(swarm).rsplit(":", 1)[0]
    # ACL patterns are globs: the hash tag's braces are literal there, but [ ] * ? \ are
    # not; swarm ids (a-z 0-9 - _) never contain them.
    return f"{base}:*"


def coordinator_rules(keys: Keys) -> list[str]:
    """What cfnd needs."""
    return [
        "resetkeys",
        "resetchannels",
        *key_patterns(keys),
        *channel_patterns(keys),
        "+@all",
        "-@dangerous",
        "+info",
        "+config|get",
        "+acl|setuser",
        "+acl|deluser",
        "+acl|whoami",
    ]


def agent_rules(keys: Keys, swarm: str) -> list[str]:
    """What one swarm's cfn-agent needs, and nothing of other swarms."""
    return [
        "resetkeys",
        "resetchannels",
        *key_patterns(keys, swarm),
        f"%R~{keys.agent_types}",
        *channel_patterns(keys, swarm),
        "-@all",
        "+@read",
        "+@write",
        "+@stream",
        "+@pubsub",
        "+@scripting",
        "+@transaction",
        "+@connection",
        "-@admin",
        "-@dangerous",
        *_AGENT_DENIED,
    ]


def monitor_rules(keys: Keys) -> list[str]:
    """Read-only: every cfn key, INFO and latency figures; no writes, no admin."""
    return [
        "resetkeys",
        "resetchannels",
        f"%R~{keys.prefix}:*",
        "-@all",
        "+@read",
        "-@dangerous",
        "+@connection",
        "+info",
        "+slowlog|get",
        "+latency|latest",
    ]


def users_acl(
    keys: Keys, swarm: str = EXAMPLE_SWARM, passwords: Mapping[str, str] | None = None
) -> str:
    """The text of ``deploy/redis/users.acl``: rights only, no password (a user
    without one cannot log in). ``passwords`` (user -> password) adds them as SHA-256
    hashes (``#<hex>``): ``python -m cfn_daemon.store.acl --passwords-from-env``."""
    users = {
        "coordinator": coordinator_rules(keys),
        f"{AGENT_USER_PREFIX}{swarm}": agent_rules(keys, swarm),
        "monitor": monitor_rules(keys),
    }
    lines = ["user default off resetpass resetkeys resetchannels -@all"]
    for name, rules in users.items():
        secret = (passwords or {}).get(name)
        login = f" #{hashlib.sha256(secret.encode()).hexdigest()}" if secret else ""
        lines.append(f"user {name} on resetpass{login} {' '.join(rules)}")
    return "\n".join(lines) + "\n"


def agent_username(keys: Keys, agent_id: str) -> str:
    """The ACL user cfnd makes for one local agent."""
    return f"{keys.prefix}-{AGENT_USER_PREFIX}{agent_id}"


async def ensure_agent_user(redis: Any, keys: Keys, swarm: str, agent_id: str) -> tuple[str, str]:
    """Create (or reset) the agent's own ACL user with a fresh password; returns
    ``(username, password)``. Raises ``redis.ResponseError`` where ACL SETUSER is not
    allowed (an old Redis, a managed service, a coordinator without the right)."""
    user = agent_username(keys, agent_id)
    password = secrets.token_urlsafe(24)
    await redis.execute_command(
        "ACL", "SETUSER", user, "reset", "on", f">{password}", *agent_rules(keys, swarm)
    )
    return user, password


async def drop_agent_user(redis: Any, keys: Keys, agent_id: str) -> None:
    """Delete the agent's ACL user (no error if it is gone)."""
    await redis.execute_command("ACL", "DELUSER", agent_username(keys, agent_id))


PASSWORD_ENV = "CFN_ACL_PASSWORD_"  # + COORDINATOR, MONITOR, AGENT_<SWARM>


def main(argv: list[str], env: Mapping[str, str]) -> str:
    """``[--prefix P] [--swarm S] [--passwords-from-env]`` -> the users.acl text."""
    prefix, swarm, from_env = "cfn", EXAMPLE_SWARM, False
    args = iter(argv)
    for arg in args:
        if arg == "--prefix":
            prefix = next(args)
        elif arg == "--swarm":
            swarm = next(args)
        elif arg == "--passwords-from-env":
            from_env = True
        else:
            raise SystemExit(f"unknown argument {arg}")
    passwords = None
    if from_env:
        passwords = {
            name: env[f"{PASSWORD_ENV}{name.upper().replace('-', '_')}"]
            for name in ("coordinator", f"{AGENT_USER_PREFIX}{swarm}", "monitor")
            if env.get(f"{PASSWORD_ENV}{name.upper().replace('-', '_')}")
        }
    return users_acl(Keys(prefix), swarm, passwords)


if __name__ == "__main__":
    sys.stdout.write(main(sys.argv[1:], os.environ))
