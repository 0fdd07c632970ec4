"""cfnd configuration: one tree of msgspec Structs, validated the same way from every
source (``settings.load`` reads the sources). Every key is documented in
deploy/cfnd.toml.example."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from cfn_client.wire.paths import default_socket_path, default_state_dir

Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
PositiveSeconds = Annotated[float, Meta(gt=0.0, le=86_400.0)]
Iterations = Annotated[int, Meta(ge=1, le=100)]
MaxAgents = Annotated[int, Meta(ge=2, le=50)]

REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://")


class Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of config sections: unknown keys are errors, not silently ignored."""


class DaemonConfig(Section):
    socket: str | None = None
    state_dir: str | None = None
    socket_mode: Annotated[int, Meta(ge=0o600, le=0o777)] = 0o660
    socket_group: str | None = None
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace_s: PositiveSeconds = 10.0
    shutdown_hard_s: PositiveSeconds = 5.0
    max_frame_bytes: Annotated[int, Meta(ge=4096, le=64 << 20)] = 1 << 20
    max_connections: Annotated[int, Meta(ge=1, le=100_000)] = 1024
    # At most this many connections per peer uid; at either cap a new connection
    # closes the longest-idle one (never one with a request or stream in flight).
    max_connections_per_uid: Annotated[int, Meta(ge=1, le=100_000)] = 256
    max_inflight_per_connection: Annotated[int, Meta(ge=1, le=10_000)] = 64
    # A connection with nothing in flight and no byte received for this long is closed
    # (clients reconnect on their next call).
    idle_timeout_s: PositiveSeconds = 300.0
    # A frame whose first byte arrived must be complete within this long (slowloris).
    frame_timeout_s: PositiveSeconds = 10.0


RoleName = Literal["none", "viewer", "operator", "admin"]


class AuthConfig(Section):
    """Roles from peer credentials (docs/SECURITY.md).

    Root and the daemon's own user are always admin with the ``exec`` right; members
    of the socket's group get ``socket_group_role``; ``users`` maps a user name or an
    ``@group`` to a role; ``exec`` lists the users and ``@groups`` that may also submit
    free text to agent types that run it as code (``shell``, ``check``, or a type with
    ``text_is_code``). Anyone else gets ``default_role`` (``none``: refused).
    """

    users: dict[str, RoleName] = {}
    exec: list[str] = []
    socket_group_role: RoleName = "operator"
    admin_users: list[str] = []
    admin_groups: list[str] = []
    viewer_users: list[str] = []
    default_role: RoleName = "none"
    # A caller with no_new_privs set (every task and its children; also programs under
    # systemd's NoNewPrivileges=) gets viewer rights at most.
    cap_tasks: bool = True
    # Requests per second per uid (a token bucket of rate_burst); 0: no limit. Root,
    # cfnd's own user and streaming ops are exempt.
    rate_per_s: Annotated[float, Meta(ge=0.0)] = 50.0
    rate_burst: Annotated[int, Meta(ge=1)] = 200


class WebConfig(Section):
    """The web console (docs/WEB.md): served by cfnd itself, on loopback only."""

    enabled: bool = False
    listen: str = "127.0.0.1:8765"  # host:port; port 0 picks a free one
    # A login token of `cfnctl web` works once, within this long.
    token_ttl_s: PositiveSeconds = 300.0
    # A browser session lasts this long after its login.
    session_ttl_s: PositiveSeconds = 12 * 3600.0

    def __post_init__(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ValueError("`listen`: expected HOST:PORT, e.g. 127.0.0.1:8765")
        if host.strip("[]") not in ("127.0.0.1", "localhost", "::1") and not host.startswith(
            "127."
        ):
            raise ValueError(
                "`listen`: the console serves loopback addresses only "
                "(127.0.0.1, ::1 or localhost); reach it remotely through an SSH tunnel"
            )

    def address(self) -> tuple[str, int]:
        """(host, port) of ``listen``."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def _loopback_listen(listen: str, what: str) -> None:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError("`listen`: expected HOST:PORT, e.g. 127.0.0.1:9464")
    if host.strip("[]") not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
        raise ValueError(
            f"`listen`: {what} serves loopback addresses only (127.0.0.1, ::1 or localhost)"
        )


class MetricsConfig(Section):
    """Prometheus ``/metrics`` over HTTP on loopback (docs/OPERATIONS.md)."""

    enabled: bool = True
    listen: str = "127.0.0.1:9464"  # host:port; port 0 picks a free one
    # How often cfnd reads its swarms' counters and event streams for the exporter.
    poll_interval_s: PositiveSeconds = 1.0

    def __post_init__(self) -> None:
        _loopback_listen(self.listen, "/metrics")

    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class MonitorConfig(Section):
    """The Redis health monitor: INFO polled on an interval, thresholds raise alerts."""

    enabled: bool = True
    interval_s: PositiveSeconds = 30.0
    # used_memory / maxmemory above this (when maxmemory is set) is an alert.
    memory_ratio_max: Probability = 0.85
    connected_clients_max: Annotated[int, Meta(ge=1, le=1_000_000)] = 5000
    # Any eviction since the last poll is an alert (evicted coordination keys lose tasks).
    evictions_max: Annotated[int, Meta(ge=0)] = 0
    require_aof: bool = True
    require_noeviction: bool = True


class AuditConfig(Section):
    """The audit stream ``cfn:audit`` (docs/OPERATIONS.md)."""

    max_entries: Annotated[int, Meta(ge=100, le=10_000_000)] = 100_000
    # This many denied requests within denial_window_s publish an alert.
    denial_burst: Annotated[int, Meta(ge=1, le=100_000)] = 10
    denial_window_s: PositiveSeconds = 60.0


class RedisConfig(Section):
    """How to reach Redis. No ``url`` and no ``cluster_nodes`` means the embedded server.

    Passwords never live here: they come from ``CFN_REDIS_PASSWORD``, from
    ``password_file``, or from a URL written in a file or the environment.
    """

    url: str | None = None
    cluster_nodes: list[str] = []
    username: str | None = None
    password_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    key_prefix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "cfn"
    pool_size: Annotated[int, Meta(ge=1, le=10_000)] = 64
    connect_timeout_s: PositiveSeconds = 5.0
    command_timeout_s: PositiveSeconds = 10.0
    health_interval_s: PositiveSeconds = 1.0
    # A health PING unanswered this long marks Redis unavailable (frozen or
    # unreachable): requests in flight and new ones answer store_unavailable.
    stall_timeout_s: PositiveSeconds = 2.0
    retry_base_s: PositiveSeconds = 0.05
    retry_max_s: PositiveSeconds = 5.0
    embedded_binary: str = "redis-server"
    embedded_startup_timeout_s: PositiveSeconds = 15.0

    def __post_init__(self) -> None:
        # "`field`: ..." lets the error name the exact key (see _config_error).
        if self.url is not None and not self.url.startswith(REDIS_SCHEMES):
            raise ValueError(f"`url`: expected a URL starting with {', '.join(REDIS_SCHEMES)}")
        for node in self.cluster_nodes:
            if not node.startswith(("redis://", "rediss://")):
                raise ValueError("`cluster_nodes`: expected redis://host:port URLs")


class LimitsConfig(Section):
    max_swarms: Annotated[int, Meta(ge=1, le=10_000)] = 64
    max_agents_per_swarm: MaxAgents = 50


class LoopConfig(Section):
    gate_threshold: Probability = 0.75
    gate_mean: Probability = 0.80
    consensus_threshold: Probability = 0.90
    max_loop2: Iterations = 10
    max_loop3: Iterations = 10
    # A validator round closes when every validator answered or after this long.
    round_timeout_s: PositiveSeconds = 600.0
    # Loop 3 (an implementer) and Loop 4 (the owner) give up waiting for an answer
    # after this long: the implementer counts as failed, the owner's decision as
    # ESCALATE (a dead pinned agent, a task stuck in a queue: never a silent hang).
    phase_timeout_s: PositiveSeconds = 3600.0
    # An epic phase that cannot start its run (no room for its agents, ...) says why at
    # once and escalates (the epic is ``blocked``) after this long; it keeps retrying.
    recruit_timeout_s: PositiveSeconds = 300.0
    # Workspaces: the git repository implementers work on (per run: --repo/--base).
    repo: str | None = None
    base: str = "HEAD"
    # Stop launching agents once a run has spent this much (None: no limit).
    budget_usd: Annotated[float, Meta(gt=0.0)] | None = None
    # How much of the candidate's patch validators see inline (the full one is a file).
    max_diff_bytes: Annotated[int, Meta(ge=1024, le=1 << 20)] = 64 * 1024
    # A finished run's worktrees and branches are removed this long after it ended.
    workspace_retention_s: Annotated[float, Meta(gt=0.0, le=365 * 86_400.0)] = 7 * 86_400.0
    # A finished run (record, event log, vote streams) or epic is deleted this long
    # after it ended.
    run_retention_s: Annotated[float, Meta(gt=0.0, le=3650 * 86_400.0)] = 30 * 86_400.0


class SwarmConfig(Section):
    topology: Literal["mesh", "hierarchical", "ring", "star"] = "mesh"
    strategy: Literal["balanced", "performance", "reliability"] = "balanced"
    max_agents: MaxAgents = 8
    # The agent type of `cfnctl run "TEXT"` without --type. None: "coder" when
    # [agent_types.coder] is configured, else the first configured non-shell
    # implementer type, else the built-in coder (Claude Code).
    default_type: str | None = None


class TasksConfig(Section):
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 3
    retry_base_s: PositiveSeconds = 1.0
    retry_max_s: PositiveSeconds = 60.0
    # A task waiting longer than this is served before newer higher-priority tasks.
    aging_s: PositiveSeconds = 30.0
    # Finished tasks, and dead-letter entries, are deleted this long after they ended.
    retention_s: PositiveSeconds = 7 * 86_400.0
    # The dead-letter queue keeps at most this many entries (the oldest go first).
    dlq_max_entries: Annotated[int, Meta(ge=1, le=10_000_000)] = 10_000
    # The largest task text `task.submit` takes (sent in chunks with `task.upload`).
    max_text_bytes: Annotated[int, Meta(ge=1024, le=512 << 20)] = 64 << 20
    default_timeout_s: Annotated[float, Meta(ge=0.0, le=86_400.0)] = 0.0  # 0: no limit
    # How long a submit's idempotency key maps to its task (a retry within it is a no-op).
    idempotency_ttl_s: PositiveSeconds = 86_400.0
    # "direct": in a mesh swarm with the balanced strategy, untargeted tasks go to their
    # type's own streams, which its agents read themselves (no dispatcher pass; fewer
    # Redis commands per task). LLM types under agents.max_llm_processes, replicated,
    # pinned and retried tasks keep the dispatcher ("routed"). See docs/SWARMS.md.
    dispatch: Literal["routed", "direct"] = "routed"


class AgentsConfig(Section):
    # When cfnd runs as root its agents run tasks as this user (none: "cfn-task" when
    # that user exists, else root with a warning); "" switches the drop off.
    run_as: str | None = None
    heartbeat_interval_s: PositiveSeconds = 1.0
    # No heartbeat for this long: the agent is lapsed and its work is reclaimed.
    lapse_s: PositiveSeconds = 5.0
    # Replacements of dead local agents: at most this many start in any minute (a
    # budget that refills), each after a backoff doubling from restart_backoff_s up
    # to restart_backoff_max_s. 0: dead agents are not replaced.
    max_restarts_per_minute: Annotated[int, Meta(ge=0, le=1000)] = 5
    restart_backoff_s: PositiveSeconds = 1.0
    restart_backoff_max_s: PositiveSeconds = 30.0
    # A local agent whose cfnd is gone (no supervisor lease, parent exited) for this
    # long hands back its work and exits, unless a restarted cfnd adopts it first.
    orphan_after_s: Annotated[float, Meta(gt=0.0, le=86_400.0)] = 120.0
    stop_grace_s: PositiveSeconds = 10.0
    # A graceful cfnd stop also stops its local agents; after a crash they keep
    # running and the next cfnd adopts them.
    stop_with_daemon: bool = True
    # At most this many LLM CLI processes (kind claude/codex) run at once across every
    # swarm; more work waits in the queue. 0: no limit.
    max_llm_processes: Annotated[int, Meta(ge=0, le=1000)] = 0
    # An agent gone (stopped, failed, lost) this long is forgotten: its record, streams
    # and vote token are deleted (`agent list` stops showing it).
    forget_after_s: PositiveSeconds = 3600.0
    # A local agent's log file is rotated past this size (one older file is kept);
    # 0: never. cfnd's own log goes to stderr (journald under systemd).
    log_max_bytes: Annotated[int, Meta(ge=0, le=1 << 40)] = 10 << 20


# Variable names that hold credentials (matched case-insensitively).
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.IGNORECASE)


class AgentTypeConfig(Section):
    """``[agent_types.NAME]``: how agents of one type run their tasks.

    ``kind``: ``command`` (argv in ``exec``), ``shell``, ``python`` (``entry``),
    ``claude`` (Claude Code, ``claude -p``), ``codex`` (``codex exec``) or ``check``
    (a plain command such as ``pytest -q`` whose exit status is its vote).
    """

    kind: Literal["command", "claude", "codex", "python", "shell", "check"] = "command"
    exec: list[str] = []
    entry: str | None = None
    workdir: str | None = None
    env: dict[str, str] = {}
    timeout_s: Annotated[float, Meta(gt=0.0)] | None = None
    max_output_bytes: Annotated[int, Meta(ge=1, le=64 << 20)] = 1 << 20
    # Agent CLI presets (claude, codex): every option is passed through.
    binary: str | None = None  # default: "claude" / "codex"
    args: list[str] = []  # extra arguments, after the preset's own
    model: str | None = None
    permission_mode: str | None = None  # claude implementers; default acceptEdits
    allowed_tools: list[str] = []  # claude; validators default to read-only tools
    max_turns: Annotated[int, Meta(ge=1, le=1000)] | None = None
    resume: bool = True  # a later iteration resumes the implementer's CLI session
    # Cost of CLIs that report tokens but no price (codex): USD per million tokens.
    usd_per_mtok_input: Annotated[float, Meta(ge=0.0)] = 0.0
    usd_per_mtok_output: Annotated[float, Meta(ge=0.0)] = 0.0
    # Older spellings of `binary` / `args` for kind "claude", still accepted.
    claude_binary: str | None = None
    claude_args: list[str] = []
    # A validator whose reject fails the round whatever the score.
    required: bool = False
    role: Literal["implementer", "validator", "coordinator", "owner"] = "implementer"
    capabilities: list[str] = []
    concurrency: Annotated[int, Meta(ge=1, le=64)] = 1
    # The executor runs the task's text as code (as kinds shell and check do): submitting
    # free text to this type then needs the `exec` right (docs/SECURITY.md).
    text_is_code: bool = False
    # Secret variables of the task's environment: NAME = "env:VAR" or "file:PATH",
    # resolved by the cfn-agent on its own host; only the reference is published.
    secrets: dict[str, str] = {}

    def __post_init__(self) -> None:
        for name, ref in self.secrets.items():
            if not ref.startswith(("env:", "file:")) or len(ref.split(":", 1)[1]) == 0:
                raise ValueError(
                    f'`secrets.{name}`: expected "env:VAR" or "file:PATH" (the value '
                    "itself never goes in the config)"
                )
        for name in self.env:
            if SECRET_NAME.search(name):
                raise ValueError(
                    f"`env.{name}` looks like a secret and would be published in clear: "
                    f'use secrets = {{ {name} = "env:{name}" }} (or "file:PATH")'
                )


class Config(Section):
    """The whole configuration tree."""

    daemon: DaemonConfig = msgspec.field(default_factory=DaemonConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    loop: LoopConfig = msgspec.field(default_factory=LoopConfig)
    swarm: SwarmConfig = msgspec.field(default_factory=SwarmConfig)
    tasks: TasksConfig = msgspec.field(default_factory=TasksConfig)
    agents: AgentsConfig = msgspec.field(default_factory=AgentsConfig)
    agent_types: dict[str, AgentTypeConfig] = {}
    web: WebConfig = msgspec.field(default_factory=WebConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    monitor: MonitorConfig = msgspec.field(default_factory=MonitorConfig)
    audit: AuditConfig = msgspec.field(default_factory=AuditConfig)

    # Relative paths (a project's cfn.toml) are taken from where cfnd starts, once:
    # redis-server runs in the state dir and agents elsewhere, so they get absolute ones.
    def socket_path(self) -> Path:
        path = Path(self.daemon.socket) if self.daemon.socket else default_socket_path({})
        return path.absolute()

    def state_path(self) -> Path:
        path = Path(self.daemon.state_dir) if self.daemon.state_dir else default_state_dir({})
        return path.absolute()


# Keys that `cfnctl config set` may change while cfnd runs; the rest need a restart.
RUNTIME_SECTIONS = ("loop", "limits", "swarm", "tasks")
RUNTIME_KEYS = frozenset({"daemon.log_level", "redis.command_timeout_s"})
