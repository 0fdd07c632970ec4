"""Task results the CFN loop may act on: each succeeded task's seal checked against
the key cfnd pinned for the agent that reports it (``core.seals``).

The loop reads its implementers', checks' and owner's tasks through here. A
succeeded task whose result does not verify (unsigned, altered, another task's or
attempt's seal, a key swapped in Redis, an agent that does not hold the task's slot)
is handed to the loop as *failed* with the reason, without its result, and rejected
once: logged, ``security.result_rejected``. A result of a local agent whose key is
still on its pipe is held back (shown as still running) until the key is in.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import structlog

from cfn_client.wire.schema.swarm import TaskInfo
from cfn_daemon.core import seals
from cfn_daemon.queue import audit_log
from cfn_daemon.queue.events import emit
from cfn_daemon.queue.stored import decode_task
from cfn_daemon.store.keys import Keys
from cfn_daemon.swarm.keyring import KeyRing
from cfn_daemon.util import signing

log = structlog.get_logger("cfn.loop")
# Rejections remembered (so each is announced once); dropped per run, and wholesale
# past this many (a flood of forgeries must not grow cfnd's memory).
REJECTED_MAX = 10_000


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


class TrustedResults:
    """Reads finished tasks for the loop, verifying the results it would trust."""

    def __init__(self, redis: Any, keys: Keys, keyring: KeyRing) -> None:
        self.redis = redis
        self.keys = keys
        self.keyring = keyring
        self._rejected: set[tuple[str, str, str, str]] = set()

    def forget(self, run_id: str) -> None:
        prefix = f"{run_id}."
        self._rejected = {r for r in self._rejected if not r[1].startswith(prefix)}

    async def get_many(self, swarm: str, task_ids: list[str]) -> list[TaskInfo]:
        """The tasks (missing ones left out), untrusted results turned into failures;
        one round trip, as ``TaskQueue.get_many``."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for tid in task_ids:
                pipe.hgetall(self.keys.task(swarm, tid))
            pipe.hgetall(self.keys.tokens(swarm))
            *raws, tokens = await pipe.execute()
        out = []
        for raw in raws:
            if not raw:
                continue
            task = decode_task(raw)
            if task.status == "succeeded":
                why = self._judge(swarm, task, raw, tokens)
                if why == "pending":
                    # Its agent's key is not in yet: not finished, for the loop (whose
                    # phase deadline still applies to it).
                    task = msgspec.structs.replace(task, status="running", result=None)
                elif why is not None:
                    await self._reject(swarm, task, raw, why)
                    task = msgspec.structs.replace(
                        task, status="failed", result=None, error=f"result rejected: {why}"
                    )
            out.append(task)
        return out

    def _judge(
        self, swarm: str, task: TaskInfo, raw: dict[bytes, bytes], tokens: dict[bytes, bytes]
    ) -> str | None:
        """None when the succeeded task's result verifies; ``"pending"``; or why not."""
        result = task.result
        if result is None:
            return "no result"
        signer, target = result.agent, task.target
        if target and signer != target:
            # Only a replacement may report a slot's task: a local agent, which signs
            # with the key cfnd pinned for that slot too (nothing is pinned on first use
            # for a name a result merely claims).
            state, key = self.keyring.lookup(swarm, signer)
            if state != "pending" and (key is None or self.keyring.get(swarm, target) != key):
                return f"agent {signer!r} does not hold the task's slot {target!r}"
        else:
            published = _text(tokens.get(signer.encode(), b""))
            state, key = self.keyring.key_for(swarm, signer, published)
        if state == "pending":
            return "pending"
        if key is None:
            return f"no key is pinned for agent {signer!r}"
        record = seals.Sealed(
            swarm=swarm,
            task_id=task.id,
            attempt=task.attempts,
            incarnation=_text(raw.get(f"inc:{task.agent or ''}".encode(), b"")),
            agent=task.agent or "",
            ok=True,
            result_json=bytes(raw.get(b"result", b"")),
            seal=seals.unpack(raw.get(b"seal", b"")),
        )
        return seals.check(
            record,
            claimed_attempt=result.attempt,
            claimed_agent=signer,
            verify=lambda message, signature: signing.verify(key, message, signature),
        )

    async def _reject(self, swarm: str, task: TaskInfo, raw: dict[bytes, bytes], why: str) -> None:
        """A forged or replayed result: logged and announced once (per task and seal).
        The one place a rejection is reported: an audit hook belongs here."""
        result = task.result
        digest = hashlib.sha256(bytes(raw.get(b"result", b""))).hexdigest()
        seen = (swarm, task.id, seals.unpack(raw.get(b"seal", b"")), digest)
        if seen in self._rejected:
            return
        if len(self._rejected) >= REJECTED_MAX:
            self._rejected.clear()
        self._rejected.add(seen)
        data = {
            "task": task.id,
            "agent": result.agent if result else "",
            "target": task.target or "",
            "attempt": task.attempts,
            "reason": why,
        }
        log.warning("result_rejected", swarm=swarm, **data)
        await emit(self.redis, self.keys, swarm, "security.result_rejected", data)
        await audit_log.refused_message(
            self.redis, self.keys, "security.result_rejected", swarm, data
        )
