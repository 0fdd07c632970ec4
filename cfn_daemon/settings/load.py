"""Loading the configuration: sources in order, each value's provenance, clear errors.

Load order (later wins): built-in defaults < TOML file < ``CFN_*`` environment <
command-line flags < runtime overrides stored in Redis (``cfnctl config set``).
This module is pure: the caller passes the environment, file text and overrides in.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from cfn_client.wire.errors import ConfigError
from cfn_daemon.settings import aliases
from cfn_daemon.settings.schema import (
    RUNTIME_KEYS,
    RUNTIME_SECTIONS,
    AgentsConfig,
    AuditConfig,
    AuthConfig,
    Config,
    DaemonConfig,
    LimitsConfig,
    LoopConfig,
    MetricsConfig,
    MonitorConfig,
    RedisConfig,
    Section,
    SwarmConfig,
    TasksConfig,
    WebConfig,
)

# Short env names kept stable for systemd units and scripts.
ENV_ALIASES = {
    "CFN_SOCKET": "daemon.socket",
    "CFN_STATE_DIR": "daemon.state_dir",
    "CFN_LOG_FORMAT": "daemon.log_format",
    "CFN_LOG_LEVEL": "daemon.log_level",
    "CFN_REDIS_URL": "redis.url",
    "CFN_REDIS_PASSWORD_FILE": "redis.password_file",
    "CFN_KEY_PREFIX": "redis.key_prefix",
}
# Generic form: CFN_<SECTION>__<KEY>, e.g. CFN_LOOP__GATE_THRESHOLD=0.8.
ENV_GENERIC = re.compile(r"^CFN_([A-Z]+)__([A-Z0-9_]+)$")


@dataclass
class LoadedConfig:
    """A validated config plus where each non-default value came from."""

    config: Config
    sources: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    runtime: dict[str, Any] = field(default_factory=dict)

    def source_list(self) -> list[str]:
        out = ["defaults"]
        if self.file:
            out.append(f"file:{self.file}")
        out += sorted({s for s in self.sources.values() if s.startswith("env:")})
        if any(s == "flag" for s in self.sources.values()):
            out.append("command line")
        if self.runtime:
            out.append("runtime overrides")
        return out


def find_config_file(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """``--config``, then ``$CFN_CONFIG`` (both must exist), then the first existing of
    ``$XDG_CONFIG_HOME/cfn/cfnd.toml`` and ``/etc/cfn/cfnd.toml``."""
    for given, origin in ((explicit, "--config"), (env.get("CFN_CONFIG"), "CFN_CONFIG")):
        if given:
            path = Path(given)
            if not path.is_file():
                raise ConfigError(
                    f"config file {path} (from {origin}) does not exist or is not a file",
                    details={"file": str(path)},
                )
            return path
    xdg = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    for candidate in (Path(xdg) / "cfn" / "cfnd.toml", Path("/etc/cfn/cfnd.toml")):
        if candidate.is_file():
            return candidate
    return None


def parse_toml(text: str, name: str) -> dict[str, Any]:
    """Parse TOML text, naming the file and line on a syntax error."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{name}: not valid TOML: {exc}", details={"file": name, "reason": str(exc)}
        ) from None


def read_config_text(file: Path) -> str:
    """The config file's text; ``ConfigError`` (naming the file, and the byte for bad
    UTF-8) when it cannot be read."""
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {file} is not valid UTF-8 (byte {exc.start}: {exc.reason}); "
            "expected UTF-8 TOML",
            details={"file": str(file), "byte_offset": exc.start},
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {file}: {exc}", details={"file": str(file)}
        ) from None


def load_config(
    *,
    file: Path | None = None,
    file_text: str | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    runtime: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Merge every source and validate the result; raises ``ConfigError`` naming the culprit."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if file is not None or file_text is not None:
        name = str(file) if file is not None else "<text>"
        if file_text is None:
            assert file is not None
            file_text = read_config_text(file)
        parsed = aliases.canonical_tree(parse_toml(file_text, name), name)
        _validate(parsed, f"file:{name}", {})
        raw = parsed
        for key in _flatten(parsed):
            sources[key] = f"file:{name}"
    for var, (key, value) in _env_keys(env).items():
        _set_typed(raw, key, value, f"env:{var}", strict=False)
        sources[key] = f"env:{var}"
    for key, value in (flags or {}).items():
        if value is not None:
            _set_typed(raw, key, value, "flag", strict=False)
            sources[key] = "flag"
    for key, value in (runtime or {}).items():
        check_runtime_key(key)
        _set_typed(raw, key, value, "runtime", strict=False)
        sources[key] = "runtime"
    config = _validate(raw, "merged config", sources)
    return LoadedConfig(config=config, sources=sources, file=file, runtime=dict(runtime or {}))


def unknown_key(key: str, origin: str = "") -> ConfigError:
    """The error for a key that is neither cfn's nor an alias, with "did you mean"."""
    where = f"{origin}: " if origin else ""
    return ConfigError(
        f"{where}unknown config key {key!r}{aliases.did_you_mean(key, all_keys())}",
        details={"key": key, "known_keys": sorted(all_keys())},
    )


def check_runtime_key(key: str, given: str | None = None) -> None:
    """Raise unless ``key`` exists and may change while cfnd runs (``given``: the alias
    the user wrote, named in the error)."""
    if key not in all_keys():
        raise unknown_key(given or key)
    if key.split(".", 1)[0] not in RUNTIME_SECTIONS and key not in RUNTIME_KEYS:
        spelled = f"{given} ({key})" if given and given != key else key
        raise ConfigError(
            f"{spelled} cannot change at runtime; set {key} in the config file (or "
            f"CFN_{key.replace('.', '__').upper()}) and restart cfnd",
            details={"key": key, "runtime_sections": list(RUNTIME_SECTIONS)},
        )


def coerce_value(key: str, value: Any) -> Any:
    """Convert a CLI/env string to the type of ``key``; raises ``ConfigError``."""
    raw: dict[str, Any] = {}
    _set_typed(raw, key, value, "value", strict=False)
    section, name = key.split(".", 1)
    return raw[section][name]


def flatten_config(config: Config) -> dict[str, Any]:
    """``{"loop.gate_threshold": 0.75, ...}`` for every key."""
    return _flatten(msgspec.to_builtins(config))


def all_keys() -> frozenset[str]:
    return frozenset(flatten_config(Config()))


def redact_url(url: str) -> str:
    """Hide the password part of a Redis URL for display and logs."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


# --------------------------------------------------------------------------- internals


def _env_keys(env: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """Each config variable's (key, value), aliases resolved (CFN_REDIS__TIMEOUT=5000)."""
    out: dict[str, tuple[str, Any]] = {}
    for var in sorted(env):
        if var in ENV_ALIASES:
            out[var] = (ENV_ALIASES[var], env[var])
            continue
        m = ENV_GENERIC.match(var)
        if m:
            given = f"{m.group(1).lower()}.{m.group(2).lower()}"
            key, value = aliases.convert(given, env[var], f"environment variable {var}")
            if key not in all_keys():
                raise ConfigError(
                    f"environment variable {var} names unknown config key {given!r}"
                    f"{aliases.did_you_mean(given, all_keys())}",
                    details={"env": var, "key": given},
                )
            out[var] = (key, value)
    return out


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and not prefix:
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


_SECTIONS: dict[str, type[Section]] = {
    "daemon": DaemonConfig,
    "auth": AuthConfig,
    "redis": RedisConfig,
    "limits": LimitsConfig,
    "loop": LoopConfig,
    "swarm": SwarmConfig,
    "tasks": TasksConfig,
    "agents": AgentsConfig,
    "web": WebConfig,
    "metrics": MetricsConfig,
    "monitor": MonitorConfig,
    "audit": AuditConfig,
}


def _set_typed(raw: dict[str, Any], key: str, value: Any, origin: str, *, strict: bool) -> None:
    """Convert one value to its field's type (strings allowed) and place it in ``raw``."""
    section, _, name = key.partition(".")
    if section not in _SECTIONS or key not in all_keys():
        raise unknown_key(key, origin)
    if isinstance(value, str) and _is_list_key(section, name):
        value = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, str) and name == "socket_mode":
        with contextlib.suppress(ValueError):
            value = int(value, 8)
    try:
        typed = msgspec.convert({name: value}, _SECTIONS[section], strict=strict)
    except msgspec.ValidationError as exc:
        raise _config_error(exc, origin, {section: {name: value}}, section=section) from None
    raw.setdefault(section, {})[name] = getattr(typed, name)


def _choices(key: str) -> list[str]:
    """The allowed values of a Literal-typed key (for error messages)."""
    section, _, name = key.partition(".")
    if section not in _SECTIONS:
        return []
    info = msgspec.inspect.type_info(_SECTIONS[section])
    assert isinstance(info, msgspec.inspect.StructType)
    for f in info.fields:
        if f.name == name and isinstance(f.type, msgspec.inspect.LiteralType):
            return [str(v) for v in f.type.values]
    return []


def _is_list_key(section: str, name: str) -> bool:
    return isinstance(getattr(_SECTIONS[section](), name), list)


def _validate(raw: dict[str, Any], origin: str, sources: Mapping[str, str]) -> Config:
    try:
        return msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError as exc:
        raise _config_error(exc, origin, raw, sources) from None


_PATH = re.compile(r"^(?P<expected>.*) - at `\$\.?(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"unknown field `(?P<field>[^`]+)`")
_FIELD_PREFIX = re.compile(r"^`(?P<field>[^`]+)`: (?P<rest>.*)$")


def _config_error(
    exc: msgspec.ValidationError,
    origin: str,
    raw: Mapping[str, Any],
    sources: Mapping[str, str] | None = None,
    *,
    section: str | None = None,
) -> ConfigError:
    text = str(exc)
    m = _PATH.match(text)
    expected, path = (m.group("expected"), m.group("path")) if m else (text, "")
    if section:
        path = f"{section}.{path}" if path else section
    sub = _UNKNOWN.search(expected) or _FIELD_PREFIX.match(expected)
    if sub:
        path = f"{path}.{sub.group('field')}" if path else sub.group("field")
        expected = sub.groupdict().get("rest") or (
            "a known key; see `cfnctl config show` for every key"
            + aliases.did_you_mean(path, all_keys())
        )
    choices = _choices(path)
    if choices:
        expected = f"{expected}; expected one of {', '.join(choices)}"
    value: Any = raw
    for part in path.split(".") if path else []:
        value = value.get(part) if isinstance(value, Mapping) else None
    where = (sources or {}).get(path, origin)
    file = where.removeprefix("file:") if where.startswith("file:") else None
    prefix = f"{file}: " if file else f"{where}: "
    return ConfigError(
        f"{prefix}key {path or '<root>'} = {value!r} is invalid: {expected}",
        details={"file": file, "source": where, "key": path, "value": value, "expected": expected},
    )
