# GENERATED from cfn_client/api/async_admin.py by `python -m cfn_client.api.generate`:
# do not edit by hand (a test fails when this file is stale).
"""The blocking client's admin ops (``Client`` inherits them)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from cfn_client.api.base import chunk_bytes, utf8_chunks
from cfn_client.api.sync_transport import SyncTransport
from cfn_client.wire.errors import InvalidArgs, ProtocolError
from cfn_client.wire.schema.audit import AuditSearchResult, RedisInfoResult
from cfn_client.wire.schema.debug import AgentDebugResult
from cfn_client.wire.schema.logs import LogEntry, LogSource, LogsPage
from cfn_client.wire.schema.snapshot import (
    MAX_SNAPSHOT_BYTES,
    SnapshotChunk,
    SnapshotImportResult,
)

__all__ = ["AdminOps"]

# Bounds on paging loops: far more pages than any real export takes.
MAX_PAGES = 1_000_000


class AdminOps(SyncTransport):
    """``agent.debug``, ``logs.export``, ``snapshot.export`` / ``snapshot.import``,
    ``audit.search``, ``redis.info``."""

    def audit_search(self, **filters: Any) -> AuditSearchResult:
        """Audit entries, newest first (since_ms, until_ms, user, op, text, limit)."""
        return self._op("audit.search", AuditSearchResult, **filters)

    def redis_info(self) -> RedisInfoResult:
        """Redis INFO figures, what could not be checked, the health alerts in effect."""
        return self._op("redis.info", RedisInfoResult)

    def agent_debug(
        self,
        agent: str,
        swarm: str | None = None,
        *,
        verbose: bool = False,
        events: int | None = None,
    ) -> AgentDebugResult:
        """One agent for troubleshooting: record, pending work, its last ``events``
        events, log tail, restart history (``verbose``: raw record, longer tail)."""
        return self._op(
            "agent.debug", AgentDebugResult, swarm=swarm, agent=agent, verbose=verbose,
            events=events,
        )  # fmt: skip

    def logs_export(
        self,
        swarm: str | None = None,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        sources: Iterable[LogSource] = ("event", "audit"),
        cursor: str | None = None,
        limit: int = 1000,
    ) -> LogsPage:
        """One page of events and audit entries between two moments (epoch ms)."""
        return self._op(
            "logs.export", LogsPage, swarm=swarm, since_ms=since_ms, until_ms=until_ms,
            sources=list(sources), cursor=cursor, limit=limit,
        )  # fmt: skip

    def logs_entries(
        self,
        swarm: str | None = None,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        sources: Iterable[LogSource] = ("event", "audit"),
        limit: int = 1000,
    ) -> Iterator[LogEntry]:
        """Every entry ``logs_export`` pages through, page by page."""
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = self.logs_export(
                swarm, since_ms=since_ms, until_ms=until_ms, sources=sources,
                cursor=cursor, limit=limit,
            )  # fmt: skip
            for entry in page.entries:  # noqa: UP028, RUF100 (yield from: sync twin only)
                yield entry
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def snapshot_export(self, swarm: str | None = None) -> bytes:
        """The snapshot document (JSON) of every swarm, or of ``swarm``, read in ranges."""
        limit = chunk_bytes((self.hello()).max_frame_bytes)
        first = self._op("snapshot.export", SnapshotChunk, swarm=swarm, limit_bytes=limit)
        parts = [first.data.encode()]
        chunk = first
        for _ in range(MAX_PAGES):
            if chunk.eof:
                return b"".join(parts)
            chunk = self._op(
                "snapshot.export", SnapshotChunk, export=first.export,
                offset=chunk.next_offset, limit_bytes=limit,
            )  # fmt: skip
            parts.append(chunk.data.encode())
        raise ProtocolError(f"snapshot export did not end after {MAX_PAGES} ranges")

    def snapshot_import(
        self, document: bytes, *, swarm: str | None = None, config: bool = False
    ) -> SnapshotImportResult:
        """Send a snapshot document in chunks and import it (``swarm``: the document's
        only swarm under this new id; ``config``: apply its config overrides too)."""
        try:
            text = document.decode()
        except UnicodeDecodeError as exc:
            raise InvalidArgs(
                f"the snapshot is not UTF-8 text (byte {exc.start}); expected a JSON "
                "document written by `cfnctl snapshot export`"
            ) from None
        if len(document) > MAX_SNAPSHOT_BYTES:
            raise InvalidArgs(
                f"the snapshot is {len(document)} bytes; at most {MAX_SNAPSHOT_BYTES} are accepted"
            )
        limit = chunk_bytes((self.hello()).max_frame_bytes)
        upload: str | None = None
        for piece in utf8_chunks(text, limit):
            sent = self._op("snapshot.import", SnapshotImportResult, data=piece, upload=upload)
            upload = sent.upload
        return self._op(
            "snapshot.import", SnapshotImportResult, upload=upload, commit=True,
            swarm=swarm, config=config,
        )  # fmt: skip
