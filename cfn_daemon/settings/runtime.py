"""The daemon's live configuration: file + env + flags, plus overrides kept in Redis.

Overrides live in the ``cfn:config`` hash (key → JSON value) so they survive a
restart and are shared by every cfnd on the same Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec
import structlog

from cfn_client.wire.errors import NotFound
from cfn_client.wire.schema.system import ConfigEntry
from cfn_daemon.settings import aliases
from cfn_daemon.settings.load import (
    LoadedConfig,
    check_runtime_key,
    coerce_value,
    flatten_config,
    load_config,
    read_config_text,
    redact_url,
)
from cfn_daemon.settings.schema import Config

log = structlog.get_logger("cfn.config")

Listener = Callable[[Config, Config], None]
_ABSENT = object()


class OverrideStore(Protocol):
    """Where runtime overrides are kept (the ``Store``); settings never import the store."""

    async def read_overrides(self) -> dict[str, bytes]:
        """Every override as key -> JSON value."""
        ...

    async def write_override(self, key: str, value: bytes) -> None:
        """Keep one override (JSON value)."""
        ...

    async def drop_overrides(self, key: str | None) -> None:
        """Drop one override, or all of them (None)."""
        ...


class ConfigManager:
    """Holds the effective config and applies runtime overrides atomically."""

    def __init__(
        self,
        *,
        file: Path | None,
        env: Mapping[str, str],
        flags: Mapping[str, Any],
        loaded: LoadedConfig | None = None,
    ) -> None:
        self._file = file
        self._env = dict(env)
        self._flags = dict(flags)
        self._file_text = read_config_text(file) if file else None
        self.loaded = loaded or self._load({})
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()

    @property
    def config(self) -> Config:
        return self.loaded.config

    def on_change(self, listener: Listener) -> None:
        """Call ``listener(old, new)`` after every applied change."""
        self._listeners.append(listener)

    def _load(self, runtime: Mapping[str, Any]) -> LoadedConfig:
        return load_config(
            file=self._file,
            file_text=self._file_text,
            env=self._env,
            flags=self._flags,
            runtime=runtime,
        )

    def _apply(self, new: LoadedConfig) -> None:
        old, self.loaded = self.loaded.config, new
        for listener in self._listeners:
            listener(old, new.config)

    # ------------------------------------------------------------------ overrides

    async def load_overrides(self, store: OverrideStore) -> None:
        """Read the kept overrides; one this version cannot use is logged and skipped."""
        # Read under the lock: a `config set` landing between the read and the apply
        # would otherwise be undone by this older snapshot.
        async with self._lock:
            raw = await store.read_overrides()
            runtime: dict[str, Any] = {}
            for key, v in raw.items():
                try:
                    value = msgspec.json.decode(v)
                    self._load({**runtime, key: value})
                except Exception as exc:
                    log.warning("config_override_ignored", key=key, error=str(exc))
                    continue
                runtime[key] = value
            if runtime != self.loaded.runtime:
                self._apply(self._load(runtime))
                log.info("config_overrides_loaded", keys=sorted(runtime))

    async def set(self, store: OverrideStore, given: str, value: str) -> tuple[str, Any, Any]:
        """Validate and persist one override; returns ``(key, new, previous)`` where
        ``key`` is cfn's name for ``given`` (an alias such as ``swarm.maxAgents``)."""
        key, value = aliases.convert(given, value)
        check_runtime_key(key, given)
        typed = coerce_value(key, value)
        async with self._lock:
            previous = flatten_config(self.config)[key]
            new = self._load({**self.loaded.runtime, key: typed})
            await store.write_override(key, msgspec.json.encode(typed))
            self._apply(new)
        log.info("config_set", key=key, value=typed, previous=previous)
        return key, typed, previous

    async def reset(self, store: OverrideStore, key: str | None) -> list[str]:
        """Drop one override (or all); returns the keys that were reset."""
        if key is not None:
            given, key = key, aliases.canonical_key(key)
            check_runtime_key(key, given)
        async with self._lock:
            keys = [key] if key is not None else sorted(self.loaded.runtime)
            runtime = {k: v for k, v in self.loaded.runtime.items() if k not in keys}
            new = self._load(runtime)
            await store.drop_overrides(key)
            self._apply(new)
        log.info("config_reset", keys=keys)
        return keys

    # ------------------------------------------------------------------ reload

    def reload(self, env: Mapping[str, str]) -> list[str]:
        """Re-read the file and env (SIGHUP). Returns changed keys that need a restart.

        A broken file keeps the running config and raises ``ConfigError``.
        """
        file_text = read_config_text(self._file) if self._file else None
        candidate = load_config(
            file=self._file,
            file_text=file_text,
            env=env,
            flags=self._flags,
            runtime=self.loaded.runtime,
        )
        self._file_text, self._env = file_text, dict(env)
        before, after = flatten_config(self.config), flatten_config(candidate.config)
        # Keys come and go with [agent_types.X] tables: compare over both key sets.
        restart = [
            k
            for k in sorted(before.keys() | after.keys())
            if after.get(k, _ABSENT) != before.get(k, _ABSENT)
            and k.split(".")[0] in ("daemon", "redis", "auth")
            and k != "daemon.log_level"
        ]
        self._apply(candidate)
        return restart

    # ------------------------------------------------------------------ display

    def entries(self, key: str | None = None) -> list[ConfigEntry]:
        """Every key (or one) with its effective value and where it came from."""
        flat = flatten_config(self.config)
        if key is not None:
            given, key = key, aliases.canonical_key(key)
            if key not in flat:
                raise NotFound(
                    f"unknown config key {given!r}{aliases.did_you_mean(given, flat)}",
                    details={"known_keys": sorted(flat)},
                )
        out = []
        for k in sorted(flat) if key is None else [key]:
            value = flat[k]
            if k == "redis.url" and isinstance(value, str):
                value = redact_url(value)
            elif k == "daemon.socket_mode" and isinstance(value, int):
                value = f"0o{value:03o}"  # as written in TOML; 432 means nothing to people
            out.append(
                ConfigEntry(key=k, value=value, source=self.loaded.sources.get(k, "default"))
            )
        return out
