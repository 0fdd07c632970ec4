"""Wire schemas of swarms, agents, tasks, messages and events.

The same Structs describe what cfnd stores in Redis (hash fields map 1:1 to
struct fields), so a record read from Redis and a reply on the socket agree.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from cfn_client.wire.protocol import Args, Result

Topology = Literal["mesh", "hierarchical", "ring", "star"]
Strategy = Literal["balanced", "performance", "reliability"]
Priority = Literal["high", "normal", "low"]
AgentRole = Literal["implementer", "validator", "coordinator", "owner"]
AgentStatus = Literal["starting", "idle", "busy", "draining", "stopped", "failed", "lost"]
SwarmStatusName = Literal["active", "draining", "destroyed"]
TaskStatus = Literal[
    "queued", "assigned", "running", "retrying", "succeeded", "failed", "cancelled"
]
TERMINAL_TASK_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
MIN_AGENTS, MAX_AGENTS = 2, 50
#: How long a `--test-mode` swarm lives without --ttl, and the longest --ttl.
DEFAULT_TEST_TTL_S, MAX_TEST_TTL_S = 3600.0, 7 * 86_400.0


# --------------------------------------------------------------------------- records


class SwarmInfo(Result, kw_only=True):
    id: str
    name: str
    topology: Topology
    strategy: Strategy
    max_agents: int
    status: SwarmStatusName
    created_ms: int
    agents: int = 0
    # `swarm init --test-mode`: destroyed when its cfnd stops, at expires_at_ms, or by
    # the next cfnd on the same state dir if its creator died (creator: host:state dir).
    ephemeral: bool = False
    expires_at_ms: int = 0
    creator: str = ""


class AgentInfo(Result, kw_only=True):
    id: str
    swarm: str
    type: str
    role: AgentRole
    status: AgentStatus
    capabilities: list[str] = []
    host: str = ""
    pid: int | None = None
    local: bool = True
    parent: str | None = None
    current_task: str | None = None
    heartbeat_age_ms: int | None = None
    tasks_done: int = 0
    tasks_failed: int = 0
    started_ms: int = 0
    restarts: int = 0
    # A replacement's slot: the id of the (dead) agent whose place and pinned tasks it
    # took over ("" for an original agent, whose slot is its own id).
    slot: str = ""


class TaskResult(Result, kw_only=True):
    ok: bool
    agent: str
    attempt: int
    exit_code: int | None = None
    output: str = ""
    stderr: str = ""
    truncated: bool = False
    confidence: float | None = None
    vote: Literal["approve", "reject"] | None = None
    feedback: Any = None
    error: str | None = None
    duration_ms: float = 0.0
    signature: str = ""  # a validator's vote, signed by its agent (Ed25519; HMAC if legacy)
    # What an agent CLI reported about itself (claude's JSON envelope, codex's events).
    session_id: str | None = None
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    num_turns: int = 0
    # Set in summaries and clipped replies: the full sizes of output / stderr (UTF-8
    # bytes) when only their last bytes are here (``task.read`` returns them whole),
    # and whether a large ``feedback`` was left out.
    output_bytes: int | None = None
    stderr_bytes: int | None = None
    feedback_clipped: bool = False


class TaskInfo(Result, kw_only=True):
    id: str
    swarm: str
    text: str
    type: str
    priority: Priority
    status: TaskStatus
    attempts: int = 0
    max_attempts: int = 3
    agent: str | None = None
    created_ms: int = 0
    updated_ms: int = 0
    timeout_s: float | None = None
    error: str | None = None
    result: TaskResult | None = None
    target: str | None = None  # only this agent may run it (CFN loop roles)
    context: dict[str, Any] = {}
    # True when this reply shortened the text, the error or the result's output /
    # stderr / feedback to fit a frame (``text_bytes``: the text's full size).
    clipped: bool = False
    text_bytes: int | None = None


class Delivery(Result, kw_only=True):
    to: str
    path: list[str]


class Event(Result, kw_only=True):
    """One entry of a swarm's event stream. ``id`` is the Redis stream id."""

    id: str
    ts_ms: int
    swarm: str
    type: str
    data: dict[str, Any] = {}


# --------------------------------------------------------------------------- args


class SwarmArgs(Args, kw_only=True):
    """Ops on one swarm: ``swarm`` None means the only swarm (an error if several)."""

    swarm: str | None = None


class SwarmInitArgs(Args, kw_only=True):
    """None for topology, max_agents or strategy: cfnd's ``[swarm]`` config default."""

    topology: Topology | None = None
    max_agents: int | None = None
    strategy: Strategy | None = None
    name: str | None = None
    force: bool = False
    # An ephemeral swarm (`--test-mode`), living ttl_s (default DEFAULT_TEST_TTL_S) at most.
    test_mode: bool = False
    ttl_s: float | None = None


class SwarmListArgs(Args, kw_only=True):
    pass


class SwarmStatusArgs(SwarmArgs, kw_only=True):
    verbose: bool = False


class SwarmScaleArgs(SwarmArgs, kw_only=True):
    agents: int
    type: str = "shell"
    force: bool = False


class SwarmDestroyArgs(SwarmArgs, kw_only=True):
    force: bool = False


class SwarmResetArgs(SwarmArgs, kw_only=True):
    force: bool = False


class SwarmBroadcastArgs(SwarmArgs, kw_only=True):
    message: str
    from_agent: str | None = None


class AgentCreateArgs(SwarmArgs, kw_only=True):
    type: str
    task: str | None = None
    role: AgentRole | None = None
    capabilities: list[str] = []
    count: int = 1


class AgentListArgs(SwarmArgs, kw_only=True):
    status: str | None = None


class AgentRefArgs(SwarmArgs, kw_only=True):
    agent: str


class AgentTerminateArgs(AgentRefArgs, kw_only=True):
    force: bool = False


class AgentSendArgs(SwarmArgs, kw_only=True):
    from_agent: str
    to_agent: str
    message: str


IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
# A task id the client picked (``task.submit task_id``): a retry with it is the same submit.
TaskId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class TaskSubmitArgs(SwarmArgs, kw_only=True):
    """``text`` inline, or ``upload``: the id of a text sent before with ``task.upload``
    (for a text too large for one frame)."""

    text: str = ""
    upload: str | None = None
    # None: cfnd's default agent type ([swarm] default_type, else coder, ...).
    type: str | None = "shell"
    priority: Priority = "normal"
    timeout_s: float | None = None
    max_attempts: int | None = None
    # A repeated key (a retry) returns the task first submitted with it; nothing new runs.
    idempotency_key: IdempotencyKey | None = None
    # The new task's id, picked by the client: a repeated submit of the same id, text and
    # type returns that task (a retry); another text or type under it is a conflict.
    task_id: TaskId | None = None


#: The most tasks one ``task.submit_many`` takes (send more in chunks).
MAX_SUBMIT_MANY = 1000


class TaskSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One task of ``task.submit_many``: ``task.submit``'s fields, the text inline."""

    text: str
    type: str | None = "shell"  # None: cfnd's default agent type
    priority: Priority = "normal"
    timeout_s: float | None = None
    max_attempts: int | None = None
    idempotency_key: IdempotencyKey | None = None


class TaskSubmitManyArgs(SwarmArgs, kw_only=True):
    """1..MAX_SUBMIT_MANY tasks, all checked before any is queued (all or none)."""

    tasks: list[TaskSpec]


class TaskListArgs(SwarmArgs, kw_only=True):
    status: str | None = None
    limit: int = 100
    cursor: str | None = None  # a previous page's ``next_cursor``


class TaskUploadArgs(SwarmArgs, kw_only=True):
    """One chunk of a task text; ``upload`` None starts a new upload."""

    data: str
    upload: str | None = None


TaskField = Literal["text", "output", "stderr"]


class TaskReadArgs(SwarmArgs, kw_only=True):
    """A byte range of one of a task's big fields."""

    task: str
    field: TaskField = "output"
    offset: int = 0
    limit_bytes: int = 256 * 1024


class TaskRefArgs(SwarmArgs, kw_only=True):
    task: str


class TaskWaitArgs(SwarmArgs, kw_only=True):
    tasks: list[str] = []
    all: bool = False
    timeout_s: float | None = None


class TaskCleanArgs(SwarmArgs, kw_only=True):
    older_than_s: float = 0.0


class DlqListArgs(SwarmArgs, kw_only=True):
    limit: int = 100


class DlqRequeueArgs(SwarmArgs, kw_only=True):
    task: str | None = None


class EventsArgs(SwarmArgs, kw_only=True):
    since_ms: int | None = None
    types: list[str] = []
    limit: int = 100


# --------------------------------------------------------------------------- results


class SwarmListResult(Result, kw_only=True):
    swarms: list[SwarmInfo]


class SwarmStatusResult(Result, kw_only=True):
    swarm: SwarmInfo
    agents: list[AgentInfo]
    queues: dict[str, int]
    tasks: dict[str, int]


class SwarmScaleResult(Result, kw_only=True):
    swarm: str
    spawned: list[str]
    stopping: list[str]


class SwarmDestroyResult(Result, kw_only=True):
    swarm: str
    stopped_agents: list[str]


class DeliveriesResult(Result, kw_only=True):
    message_id: str
    deliveries: list[Delivery]


class AgentListResult(Result, kw_only=True):
    agents: list[AgentInfo]


class TaskListResult(Result, kw_only=True):
    """Task summaries (see ``TaskInfo.clipped``). ``next_cursor``: more tasks follow
    (pass it as ``cursor``). From ``task.wait``: ``counts`` by final status of every
    waited task, and ``omitted``, how many of them did not fit in this reply."""

    tasks: list[TaskInfo]
    next_cursor: str | None = None
    counts: dict[str, int] = {}
    omitted: int = 0


class TaskSubmitManyResult(Result, kw_only=True):
    """The ids of the tasks queued, in the order they were given."""

    swarm: str
    ids: list[str]


class TaskUploadResult(Result, kw_only=True):
    upload: str
    bytes: int  # the upload's size so far


class TaskChunk(Result, kw_only=True):
    """``data`` is ``field`` from byte ``offset`` to ``next_offset`` (never splitting a
    character); ``eof`` when ``next_offset == total_bytes``."""

    task: str
    field: TaskField
    offset: int
    data: str
    next_offset: int
    total_bytes: int
    eof: bool


class CountResult(Result, kw_only=True):
    count: int


class EventsResult(Result, kw_only=True):
    events: list[Event]
