"""``logs.export`` and ``snapshot.export`` / ``snapshot.import``.

A snapshot moves in pieces that fit a frame: an export is built once and then read
range by range (kept for ``HOLD_S`` or until read to its end); an import is sent in
chunks into a buffer here, and written to Redis only on ``commit``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import msgspec

from cfn_client.wire.errors import CfnError, Conflict, InvalidArgs, NotFound
from cfn_client.wire.schema.logs import LogsExportArgs, LogsPage
from cfn_client.wire.schema.snapshot import (
    MAX_SNAPSHOT_BYTES,
    SnapshotChunk,
    SnapshotExportArgs,
    SnapshotImportArgs,
    SnapshotImportResult,
)
from cfn_daemon.api.router import RequestContext, Router
from cfn_daemon.core import snapshot as rules
from cfn_daemon.queue.log_export import export_page
from cfn_daemon.settings.runtime import ConfigManager
from cfn_daemon.store import Store
from cfn_daemon.swarm import snapshot
from cfn_daemon.swarm.service import SwarmService

#: How long an export or an unfinished import is kept between its calls.
HOLD_S = 600.0
#: Exports / imports held at once (each up to MAX_SNAPSHOT_BYTES).
MAX_HELD = 2


@dataclass
class _Held:
    data: bytearray
    until: float = field(default_factory=lambda: time.monotonic() + HOLD_S)


@dataclass
class AdminOps:
    swarms: SwarmService
    store: Store
    config: ConfigManager
    _exports: dict[str, _Held] = field(default_factory=dict)
    _imports: dict[str, _Held] = field(default_factory=dict)

    def register(self, router: Router) -> None:
        router.add("logs.export", self.logs_export)
        router.add("snapshot.export", self.snapshot_export)
        router.add("snapshot.import", self.snapshot_import)

    async def logs_export(self, ctx: RequestContext, args: LogsExportArgs) -> LogsPage:
        if (
            args.since_ms is not None
            and args.until_ms is not None
            and args.until_ms < args.since_ms
        ):
            raise InvalidArgs(
                f"until ({args.until_ms}) is before since ({args.since_ms}); expected "
                "since <= until",
                details={"field": "until_ms"},
            )
        if args.swarm is not None:
            swarms = [await self.swarms.resolve(args.swarm)]
        else:
            swarms = [s.id for s in await self.swarms.all()]
        budget = self.swarms.config().daemon.max_frame_bytes // 4
        return await export_page(self.store.redis, self.store.keys, args, swarms, budget)

    async def snapshot_export(self, ctx: RequestContext, args: SnapshotExportArgs) -> SnapshotChunk:
        _expire(self._exports)
        if args.export is None:
            if len(self._exports) >= MAX_HELD:
                raise Conflict(
                    f"{MAX_HELD} snapshot exports are already being read; try again when "
                    f"they are done (or in {HOLD_S:.0f} s)"
                )
            eid = f"x{uuid.uuid4().hex}"
            self._exports[eid] = _Held(bytearray(await snapshot.export(self.swarms, args.swarm)))
        else:
            eid = args.export
        held = self._exports.get(eid)
        if held is None:
            raise NotFound(
                f"no snapshot export {eid!r}: unknown, read to its end, or expired "
                f"({HOLD_S:.0f} s); start a new one",
                details={"export": eid},
            )
        data = held.data
        if args.offset > len(data):
            raise InvalidArgs(
                f"offset {args.offset} is past the end of the snapshot ({len(data)} bytes)"
            )
        end = min(len(data), args.offset + args.limit_bytes)
        while end < len(data) and (data[end] & 0xC0) == 0x80:
            end -= 1  # never split a character
        chunk = SnapshotChunk(
            export=eid,
            offset=args.offset,
            data=bytes(data[args.offset : end]).decode(),
            next_offset=end,
            total_bytes=len(data),
            eof=end == len(data),
        )
        if chunk.eof:
            self._exports.pop(eid, None)
        return chunk

    async def snapshot_import(
        self, ctx: RequestContext, args: SnapshotImportArgs
    ) -> SnapshotImportResult:
        _expire(self._imports)
        if args.upload is None:
            if len(self._imports) >= MAX_HELD:
                raise Conflict(f"{MAX_HELD} snapshot imports are already in progress")
            uid = f"i{uuid.uuid4().hex}"
            self._imports[uid] = _Held(bytearray())
        else:
            uid = args.upload
        held = self._imports.get(uid)
        if held is None:
            raise NotFound(
                f"no snapshot import {uid!r}: unknown, committed, or expired "
                f"({HOLD_S:.0f} s after its last chunk); send the document again",
                details={"upload": uid},
            )
        held.data += args.data.encode()
        held.until = time.monotonic() + HOLD_S
        if len(held.data) > MAX_SNAPSHOT_BYTES:
            self._imports.pop(uid, None)
            raise InvalidArgs(f"the snapshot is over {MAX_SNAPSHOT_BYTES} bytes; not imported")
        if not args.commit:
            return SnapshotImportResult(upload=uid, bytes=len(held.data))
        self._imports.pop(uid, None)
        doc = await asyncio.to_thread(rules.decode, bytes(held.data))  # big: off the loop
        result = await snapshot.restore(self.swarms, doc, args.swarm)
        result.upload, result.bytes = uid, len(held.data)
        if args.config:
            for key, raw in sorted(doc.config.items()):
                value = msgspec.json.decode(raw) if raw else ""
                text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
                try:
                    await self.config.set(self.store, key, text)
                except CfnError as exc:
                    result.notes.append(f"config {key} not applied: {exc}")
                else:
                    result.config.append(key)
        elif doc.config:
            result.notes.append(
                f"{len(doc.config)} config overrides in the snapshot were not applied "
                "(import with --config to apply them)"
            )
        return result


def _expire(held: dict[str, _Held]) -> None:
    now = time.monotonic()
    for key in [k for k, h in held.items() if h.until < now]:
        held.pop(key, None)
