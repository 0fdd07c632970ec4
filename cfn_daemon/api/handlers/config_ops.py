"""Config ops: show, set, reset, validate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cfn_client.wire.schema.system import (
    ConfigResetArgs,
    ConfigResetResult,
    ConfigSetArgs,
    ConfigSetResult,
    ConfigShowArgs,
    ConfigShowResult,
    ConfigValidateArgs,
    ConfigValidateResult,
)
from cfn_daemon.api.router import RequestContext, Router
from cfn_daemon.settings.load import load_config
from cfn_daemon.settings.runtime import ConfigManager
from cfn_daemon.store import Store


@dataclass
class ConfigOps:
    """Handlers over the daemon's live configuration."""

    store: Store
    config: ConfigManager

    def register(self, router: Router) -> None:
        router.add("config.show", self.show)
        router.add("config.set", self.set)
        router.add("config.reset", self.reset)
        router.add("config.validate", self.validate)

    async def show(self, ctx: RequestContext, args: ConfigShowArgs) -> ConfigShowResult:
        return ConfigShowResult(entries=self.config.entries(args.key))

    async def set(self, ctx: RequestContext, args: ConfigSetArgs) -> ConfigSetResult:
        key, value, previous = await self.config.set(self.store, args.key, args.value)
        return ConfigSetResult(key=key, value=value, previous=previous)

    async def reset(self, ctx: RequestContext, args: ConfigResetArgs) -> ConfigResetResult:
        return ConfigResetResult(reset=await self.config.reset(self.store, args.key))

    async def validate(self, ctx: RequestContext, args: ConfigValidateArgs) -> ConfigValidateResult:
        if args.text is None:
            # The running config was validated when it was loaded; re-check the file on disk.
            loaded = self.config.loaded
            load_config(file=loaded.file, env={}, runtime=loaded.runtime)
            return ConfigValidateResult(valid=True, source=str(loaded.file or "defaults"))
        # Only the file's own content is checked: the daemon's env is not the caller's.
        load_config(file=Path(args.name), file_text=args.text, env={})
        return ConfigValidateResult(valid=True, source=args.name)
