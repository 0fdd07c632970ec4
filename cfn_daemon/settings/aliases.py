"""The guide's spellings of config keys (``swarm.maxAgents``, ``redis.timeout`` in ms) as
aliases of cfn's own keys, with unit conversion; "did you mean" for unknown keys.

One table, used everywhere a key is read: ``cfnctl config set`` / ``config show KEY`` /
``config reset KEY``, the TOML file and ``CFN_<SECTION>__<KEY>`` variables. Alias
look-ups ignore case (environment variable names are upper case). Pure: no I/O.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cfn_client.wire.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Alias:
    """``key``: the cfn key an alias stands for; ``scale``: value x scale = cfn's unit."""

    key: str
    scale: float = 1.0
    unit: str = ""  # the alias's unit, for messages ("ms")


MS = 0.001

#: The guide's keys (its §3 redis.json, §4 `config set`, §7 best practices) that cfn has.
ALIASES: dict[str, Alias] = {
    "swarm.maxAgents": Alias("swarm.max_agents"),
    "redis.timeout": Alias("redis.command_timeout_s", MS, "ms"),
    "redis.commandTimeout": Alias("redis.command_timeout_s", MS, "ms"),
    "redis.connectTimeout": Alias("redis.connect_timeout_s", MS, "ms"),
    "redis.retryDelayOnFailover": Alias("redis.retry_base_s", MS, "ms"),
    "logging.level": Alias("daemon.log_level"),
    "logging.format": Alias("daemon.log_format"),
}

#: The guide's keys cfn deliberately has no equivalent for: refused, saying why (a key
#: that is accepted must have an effect).
NO_EQUIVALENT: dict[str, str] = {
    "agent.maxMemory": "cfn does not cap an agent's memory; run cfnd under systemd "
    "with MemoryMax= (or a cgroup) to bound its agents",
    "redis.maxRetriesPerRequest": "cfn retries Redis commands itself, with backoff from "
    "redis.retry_base_s to redis.retry_max_s",
    "redis.enableOfflineQueue": "cfn never queues commands while Redis is down: they answer "
    "store_unavailable at once",
    "redis.maxMemoryPolicy": "set maxmemory-policy in redis.conf (cfn's state must not be "
    "evicted: use noeviction)",
}

_BY_LOWER = {k.lower(): (k, a) for k, a in ALIASES.items()}
_REFUSED_LOWER = {k.lower(): (k, why) for k, why in NO_EQUIVALENT.items()}


def alias_of(key: str) -> tuple[str, Alias] | None:
    """``(the alias as the table spells it, its Alias)`` if ``key`` is one."""
    return _BY_LOWER.get(key.lower())


def check_equivalent(key: str, origin: str = "") -> None:
    """Raise ``ConfigError`` when ``key`` is one of the guide's keys cfn has no use for."""
    refused = _REFUSED_LOWER.get(key.lower())
    if refused is not None:
        name, why = refused
        where = f"{origin}: " if origin else ""
        raise ConfigError(
            f"{where}{name} has no cfn equivalent: {why}", details={"key": key, "fix": why}
        )


def canonical_key(key: str, origin: str = "") -> str:
    """cfn's own name for ``key`` (itself when not an alias)."""
    check_equivalent(key, origin)
    found = alias_of(key)
    return found[1].key if found else key


def convert(key: str, value: Any, origin: str = "") -> tuple[str, Any]:
    """``(cfn key, value in cfn's unit)`` for ``key`` and ``value`` as given."""
    check_equivalent(key, origin)
    found = alias_of(key)
    if found is None:
        return key, value
    name, alias = found
    if alias.scale == 1.0:
        return alias.key, value
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        where = f"{origin}: " if origin else ""
        raise ConfigError(
            f"{where}{name} = {value!r} is invalid: expected a number of {alias.unit} "
            f"(it sets {alias.key})",
            details={"key": key, "value": value, "expected": f"a number of {alias.unit}"},
        )
    return alias.key, round(number * alias.scale, 9)


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """``"; did you mean a, b?"`` for the closest known keys and aliases, else ``""``."""
    names = sorted({*known, *ALIASES})
    lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(key.lower(), list(lower), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(lower[c] for c in close)}?" if close else ""


def canonical_tree(tree: dict[str, Any], origin: str) -> dict[str, Any]:
    """A parsed TOML file with aliased keys (``[swarm] maxAgents``, ``[logging] level``)
    moved to cfn's keys and converted; an alias and its key both set is an error."""
    out: dict[str, Any] = {}
    moved: list[tuple[str, str, Any]] = []
    for section, body in tree.items():
        if not isinstance(body, dict):
            out[section] = body
            continue
        kept: dict[str, Any] = {}
        for name, value in body.items():
            full = f"{section}.{name}"
            check_equivalent(full, origin)
            if alias_of(full) is not None:
                target, converted = convert(full, value, origin)
                moved.append((full, target, converted))
            else:
                kept[name] = value
        if kept or section not in _alias_sections():
            out[section] = kept
    for full, target, value in moved:
        section, name = target.split(".", 1)
        dest = out.setdefault(section, {})
        if name in dest:
            raise ConfigError(
                f"{origin}: {full} and {target} are the same key; keep one",
                details={"key": target},
            )
        dest[name] = value
    return out


def _alias_sections() -> set[str]:
    """Sections that exist only as the guide's spelling (``[logging]``)."""
    targets = {a.key.split(".", 1)[0] for a in ALIASES.values()}
    return {k.split(".", 1)[0] for k in ALIASES} - targets
