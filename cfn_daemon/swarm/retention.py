"""Per-swarm retention: what a swarm stores stays bounded however long cfnd runs.

One pass (run by the supervisor every ``min(5 min, tasks.retention_s / 10)``):

- finished tasks past ``tasks.retention_s`` are deleted by score ranges of the status
  indexes, each re-checked inside ``retain.lua`` (event ``task.expired``);
- the dead-letter stream keeps at most ``tasks.dlq_max_entries`` entries, none older
  than ``tasks.retention_s``;
- agents gone (stopped, failed, lost) for ``agents.forget_after_s`` are forgotten:
  record, work stream, inbox, heartbeat and vote token (event ``agent.forgotten``).

Every step is bounded per pass; what is left is taken by the next pass.
"""

from __future__ import annotations

from cfn_daemon.queue.events import emit
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.swarm.context import SwarmContext


async def sweep(ctx: SwarmContext, keep_agents: set[str]) -> list[str]:
    """One retention pass over ``ctx``'s swarm; ``keep_agents``: never forget these
    (local agents this cfnd still tracks). Returns the agents forgotten."""
    cfg = ctx.config()
    redis, keys = ctx.store.redis, ctx.store.keys
    retention_s = cfg.tasks.retention_s
    expired = await ctx.tasks.clean(ctx.swarm, retention_s)
    if expired:
        await emit(
            redis, keys, ctx.swarm, "task.expired", {"count": expired, "retention_s": retention_s}
        )
    await ctx.tasks.trim_dlq(ctx.swarm, cfg.tasks.dlq_max_entries, retention_s)
    cutoff = now_ms() - int(cfg.agents.forget_after_s * 1000)
    forgotten = await ctx.registry.forget_gone(ctx.swarm, cutoff, keep_agents)
    if forgotten:
        await emit(
            redis,
            keys,
            ctx.swarm,
            "agent.forgotten",
            {"agents": forgotten[:100], "count": len(forgotten),
             "forget_after_s": cfg.agents.forget_after_s},
        )  # fmt: skip
    return forgotten
