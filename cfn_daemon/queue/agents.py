"""The agent registry in Redis: register, heartbeat, look up, mark.

Each agent is a hash ``cfn:{s}:agent:{id}`` (AgentInfo fields plus ``load``,
``concurrency``, ``ewma_ms`` and ``desired``), listed in the set ``cfn:{s}:agents``;
heartbeats are scores in the zset ``cfn:{s}:hb``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

import msgspec
from redis.exceptions import ResponseError

from cfn_client.wire.errors import Conflict, NotFound
from cfn_daemon.core.placement import AgentRecord
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.store.keys import EVENTS_MAXLEN, Keys
from cfn_daemon.store.scripts import Scripts

_json = msgspec.json.Encoder()


def new_agent_id(agent_type: str) -> str:
    return f"{agent_type[:12]}-{uuid.uuid4().hex[:6]}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_agent(
    raw: Mapping[Any, Any], now: int | None = None, hb_ms: int | None = None
) -> AgentRecord:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    record: dict[str, Any] = {}
    for key, value in fields.items():
        if key not in AgentRecord.__struct_fields__:
            continue
        if value == "" and key in ("pid", "parent", "current_task", "ewma_ms"):
            continue
        if key == "capabilities":
            record[key] = [c for c in value.split(",") if c]
        elif key == "local":
            record[key] = value == "1"
        else:
            record[key] = value
    agent = msgspec.convert(record, AgentRecord, strict=False)
    if hb_ms is not None:
        agent.heartbeat_age_ms = max(0, (now or now_ms()) - hb_ms)
    return agent


class Beat(NamedTuple):
    """What one heartbeat learnt."""

    status: str  # the agent's record status ("missing" once it was forgotten)
    desired: str  # "stop" when cfnd asks the agent to stop
    cancelled: bool  # the task named in the beat was cancelled
    supervised: bool  # a cfnd holds this swarm's supervisor lease


class AgentRegistry:
    """Agent records for one Redis and key prefix (shared by cfnd and cfn-agent)."""

    def __init__(self, redis: Any, keys: Keys, scripts: Scripts) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = scripts

    async def register(self, agent: AgentRecord, *, max_agents: int = 0) -> None:
        """(Re)join: record the agent, make sure its work group exists, announce it.

        Raises ``Conflict`` (details ``live``, ``max_agents``) when the swarm already
        has as many live agents as its ``max_agents`` (or ``max_agents``, if lower and
        not 0): checked in the registering script, so concurrent joins cannot exceed it.
        """
        swarm = agent.swarm
        fields: list[Any] = []
        for key, value in msgspec.structs.asdict(agent).items():
            if key in ("heartbeat_age_ms", "tasks_done", "tasks_failed", "ewma_ms", "restarts"):
                continue  # counters survive a re-registration under the same id
            if key == "slot" and not value:
                continue  # cfnd sets a replacement's slot; the agent does not know it
            if isinstance(value, list):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "1" if value else "0"
            elif value is None:
                value = ""
            fields += [key, value]
        event = _json.encode(
            {
                "agent": agent.id,
                "type": agent.type,
                "role": agent.role,
                "host": agent.host,
                "pid": agent.pid,
                "local": agent.local,
            }
        )
        try:
            await self.scripts.run(
                "register",
                [
                    self.keys.agents(swarm),
                    self.keys.agent(swarm, agent.id),
                    self.keys.heartbeats(swarm),
                    self.keys.work(swarm, agent.id),
                    self.keys.events(swarm),
                    self.keys.swarm_state(swarm),
                ],
                [
                    agent.id,
                    now_ms(),
                    EVENTS_MAXLEN,
                    self.keys.notify(swarm),
                    event,
                    self.keys.agent(swarm, ""),
                    max_agents,
                    *fields,
                ],
            )
        except ResponseError as exc:
            if not str(exc).startswith("FULL "):
                raise
            live, cap = (int(n) for n in str(exc).split()[1:3])
            raise Conflict(
                f"swarm {swarm} is full: {live} live agents, at most {cap} "
                "(its max_agents / limits.max_agents_per_swarm); agent "
                f"{agent.id} cannot join",
                details={"swarm": swarm, "live": live, "max_agents": cap},
            ) from None

    async def heartbeat(self, swarm: str, agent: str, task_id: str | None) -> Beat:
        """Record a beat; say what cfnd wants of the agent (see ``Beat``)."""
        task_key = self.keys.task(swarm, task_id) if task_id else self.keys.agent(swarm, agent)
        status, desired, cancel, supervised = await self.scripts.run(
            "heartbeat",
            [
                self.keys.heartbeats(swarm),
                self.keys.agent(swarm, agent),
                task_key,
                self.keys.supervisor(swarm),
            ],
            [agent, now_ms(), 1 if task_id else 0],
        )
        return Beat(_text(status), _text(desired), _text(cancel) == "1", _text(supervised) == "1")

    async def get(self, swarm: str, agent: str) -> AgentRecord:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.agent(swarm, agent))
            pipe.zscore(self.keys.heartbeats(swarm), agent)
            raw, hb = await pipe.execute()
        if not raw:
            raise NotFound(
                f"no agent {agent!r} in swarm {swarm}; `cfnctl agent list` shows the agents",
                details={"agent": agent, "swarm": swarm},
            )
        return decode_agent(raw, hb_ms=int(hb) if hb is not None else None)

    async def slot(self, swarm: str, slot: str) -> AgentRecord:
        """The agent record behind a slot (a run's role): the agent of that id, else the
        replacement filling it (the dead original's record may have been forgotten)."""
        try:
            return await self.get(swarm, slot)
        except NotFound:
            filling = [a for a in await self.all(swarm) if a.slot == slot]
            if not filling:
                raise
            return filling[-1]

    async def all(self, swarm: str) -> list[AgentRecord]:
        ids = sorted(_text(a) for a in await self.redis.smembers(self.keys.agents(swarm)))
        async with self.redis.pipeline(transaction=False) as pipe:
            for agent in ids:
                pipe.hgetall(self.keys.agent(swarm, agent))
                pipe.zscore(self.keys.heartbeats(swarm), agent)
            replies = await pipe.execute()
        now = now_ms()
        out = []
        for raw, hb in zip(replies[::2], replies[1::2], strict=True):
            if raw:
                out.append(decode_agent(raw, now, int(hb) if hb is not None else None))
        out.sort(key=lambda a: (a.started_ms, a.id))
        return out

    async def set_fields(self, swarm: str, agent: str, **fields: Any) -> None:
        await self.redis.hset(
            self.keys.agent(swarm, agent),
            mapping={k: ("" if v is None else v) for k, v in fields.items()},
        )

    async def lapsed(self, swarm: str, older_than_ms: int) -> list[str]:
        """Agents whose last heartbeat is older than the cutoff."""
        raw = await self.redis.zrangebyscore(self.keys.heartbeats(swarm), "-inf", older_than_ms)
        return [_text(a) for a in raw]

    async def mark_gone(
        self, swarm: str, agent: str, status: str, event: Mapping[str, Any] | None = None
    ) -> None:
        """Take an agent out of scheduling (failed, lost or stopped); with ``event``, the
        ``agent.<status>`` event is appended in the same transaction."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.keys.agent(swarm, agent),
                mapping={"status": status, "load": 0, "current_task": "", "gone_ms": now_ms()},
            )
            pipe.zrem(self.keys.heartbeats(swarm), agent)
            if event is not None:
                pipe.xadd(
                    self.keys.events(swarm),
                    {"type": f"agent.{status}", "ts": now_ms(), "data": _json.encode(event)},
                    maxlen=EVENTS_MAXLEN,
                    approximate=True,
                )
                pipe.publish(self.keys.notify(swarm), "ev")
            await pipe.execute()

    async def forget_gone(self, swarm: str, gone_before_ms: int, keep: set[str]) -> list[str]:
        """Forget agents gone (stopped, failed, lost) since before ``gone_before_ms``,
        except those in ``keep``: record, streams, heartbeat and vote token, each
        re-checked by the deleting script. Returns the forgotten ids."""
        ids = [_text(a) for a in await self.redis.smembers(self.keys.agents(swarm))]
        ids = [a for a in ids if a not in keep]
        if not ids:
            return []
        now = now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for agent in ids:
                await self.scripts.run(
                    "forget_agent",
                    [
                        self.keys.agents(swarm),
                        self.keys.agent(swarm, agent),
                        self.keys.work(swarm, agent),
                        self.keys.inbox(swarm, agent),
                        self.keys.heartbeats(swarm),
                        self.keys.tokens(swarm),
                        self.keys.perf(swarm, agent),
                    ],
                    [agent, gone_before_ms, now],
                    client=pipe,
                )
            done = await pipe.execute()
        return [a for a, n in zip(ids, done, strict=True) if int(n)]

    async def forget(self, swarm: str, agent: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(self.keys.agents(swarm), agent)
            pipe.delete(
                self.keys.agent(swarm, agent),
                self.keys.work(swarm, agent),
                self.keys.inbox(swarm, agent),
                self.keys.perf(swarm, agent),
            )
            pipe.zrem(self.keys.heartbeats(swarm), agent)
            await pipe.execute()


def host_name() -> str:
    return socket.gethostname()


def this_pid() -> int:
    return os.getpid()
