"""The snapshot document (``cfnctl snapshot export`` / ``import``) and its ops' schemas.

A snapshot is one versioned JSON document::

    {"format": "cfn-snapshot", "version": 1, "created_at": "2026-01-01T00:00:00Z",
     "swarms": [...], "agents": [...], "tasks": [...], "runs": [...], "epics": [...],
     "config": {...}}

Records are the Redis hashes cfnd keeps, field by field (``record``: field → text), so a
round trip through a snapshot loses nothing cfn stores about them. The document is
moved in byte ranges (``snapshot.export``) and chunks (``snapshot.import``), never in
one frame.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from cfn_client.wire.protocol import Args, Result

SNAPSHOT_FORMAT = "cfn-snapshot"
SNAPSHOT_VERSION = 1
#: The largest document cfnd builds or accepts (it is held in memory while it moves).
MAX_SNAPSHOT_BYTES = 256 << 20
Record = dict[str, str]


class _Doc(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Document parts refuse fields they do not know (a newer writer's, or a typo)."""


class SnapSwarm(_Doc):
    """A swarm's state hash and its task counters (``stats``)."""

    id: str
    state: Record
    stats: Record = {}


class SnapAgent(_Doc):
    swarm: str
    id: str
    record: Record


class SnapTask(_Doc):
    """``created_ms`` orders the swarm's task list; a dead-lettered task (``dlq_error``
    set) is put back in the dead-letter queue under its entry id (``record.dlq_entry``)."""

    swarm: str
    id: str
    created_ms: int
    record: Record
    dlq_error: str | None = None


class SnapStreamEntry(_Doc):
    id: str
    fields: Record


class SnapRun(_Doc):
    """A CFN-loop run: its hash and its log stream (entry ids kept)."""

    swarm: str
    id: str
    created_ms: int
    record: Record
    log: list[SnapStreamEntry] = []


class SnapEpic(_Doc):
    swarm: str
    id: str
    created_ms: int
    record: Record


class Snapshot(_Doc):
    """The whole document. ``config``: the runtime overrides (key → JSON value)."""

    format: Literal["cfn-snapshot"]
    version: Literal[1]
    created_at: str
    swarms: list[SnapSwarm] = []
    agents: list[SnapAgent] = []
    tasks: list[SnapTask] = []
    runs: list[SnapRun] = []
    epics: list[SnapEpic] = []
    config: Record = {}


class SnapshotHeader(msgspec.Struct, kw_only=True):
    """What is read first, to refuse a document that is not one (or too new)."""

    format: str = ""
    version: int = 0


# --------------------------------------------------------------------------- ops

ChunkBytes = Annotated[int, Meta(ge=1024, le=16 << 20)]


class SnapshotExportArgs(Args, kw_only=True):
    """The first call (``export`` None) builds the document of every swarm (or of
    ``swarm``); then read it range by range with the returned ``export`` id."""

    swarm: str | None = None
    export: str | None = None
    offset: Annotated[int, Meta(ge=0)] = 0
    limit_bytes: ChunkBytes = 256 * 1024


class SnapshotChunk(Result, kw_only=True):
    """Bytes ``offset`` to ``next_offset`` of the document (whole characters)."""

    export: str
    offset: int
    data: str
    next_offset: int
    total_bytes: int
    eof: bool


class SnapshotImportArgs(Args, kw_only=True):
    """Send the document in chunks (``upload`` None starts one), then ``commit``.
    ``swarm``: import the document's only swarm under this id. ``config``: apply the
    document's runtime config overrides too."""

    data: str = ""
    upload: str | None = None
    commit: bool = False
    swarm: str | None = None
    config: bool = False


class SnapshotImportResult(Result, kw_only=True):
    upload: str
    bytes: int
    committed: bool = False
    swarms: list[str] = []
    agents: int = 0
    tasks: int = 0
    runs: int = 0
    epics: int = 0
    requeued: list[str] = []  # tasks in flight when exported, queued again
    config: list[str] = []  # overrides applied
    notes: list[str] = []
