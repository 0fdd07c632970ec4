"""``audit.search`` (who did what, admin) and ``redis.info`` (Redis health, viewer)."""

from __future__ import annotations

from dataclasses import dataclass

from cfn_client.wire.schema.audit import (
    AuditSearchArgs,
    AuditSearchResult,
    RedisInfoArgs,
    RedisInfoResult,
)
from cfn_daemon.api.audit import AuditLog
from cfn_daemon.api.redis_monitor import RedisMonitor
from cfn_daemon.api.router import RequestContext, Router


@dataclass
class AuditOps:
    audit: AuditLog
    monitor: RedisMonitor

    def register(self, router: Router) -> None:
        router.add("audit.search", self.audit_search)
        router.add("redis.info", self.redis_info)

    async def audit_search(self, ctx: RequestContext, args: AuditSearchArgs) -> AuditSearchResult:
        return await self.audit.search(args)

    async def redis_info(self, ctx: RequestContext, args: RedisInfoArgs) -> RedisInfoResult:
        return await self.monitor.info()
