"""The op registry: every op's argument and result schema and the role it needs.

Adding an op: define its Structs (protocol.py for system ops, swarm_schema.py for
swarms/agents/tasks), add one line here, route it in the daemon, and add one
method to each client class. Tests fail until all four are done.
"""

from __future__ import annotations

from dataclasses import dataclass

from cfn_client.wire.errors import ProtocolError
from cfn_client.wire.protocol import Args, HelloArgs, HelloResult, Result, Role
from cfn_client.wire.schema.audit import (
    AuditSearchArgs,
    AuditSearchResult,
    RedisInfoArgs,
    RedisInfoResult,
)
from cfn_client.wire.schema.debug import AgentDebugArgs, AgentDebugResult
from cfn_client.wire.schema.logs import LogsExportArgs, LogsPage
from cfn_client.wire.schema.loop import (
    LoopApplyArgs,
    LoopApplyResult,
    LoopApproveArgs,
    LoopBacklogResult,
    LoopCancelArgs,
    LoopCleanResult,
    LoopExtendArgs,
    LoopFollowArgs,
    LoopListArgs,
    LoopListResult,
    LoopRefArgs,
    LoopRejectArgs,
    LoopStartArgs,
    RunInfo,
)
from cfn_client.wire.schema.observe import MetricsArgs, MetricsResult
from cfn_client.wire.schema.snapshot import (
    SnapshotChunk,
    SnapshotExportArgs,
    SnapshotImportArgs,
    SnapshotImportResult,
)
from cfn_client.wire.schema.swarm import (
    AgentCreateArgs,
    AgentInfo,
    AgentListArgs,
    AgentListResult,
    AgentRefArgs,
    AgentSendArgs,
    AgentTerminateArgs,
    CountResult,
    DeliveriesResult,
    DlqListArgs,
    DlqRequeueArgs,
    Event,
    EventsArgs,
    EventsResult,
    SwarmBroadcastArgs,
    SwarmDestroyArgs,
    SwarmDestroyResult,
    SwarmInfo,
    SwarmInitArgs,
    SwarmListArgs,
    SwarmListResult,
    SwarmResetArgs,
    SwarmScaleArgs,
    SwarmScaleResult,
    SwarmStatusArgs,
    SwarmStatusResult,
    TaskChunk,
    TaskCleanArgs,
    TaskInfo,
    TaskListArgs,
    TaskListResult,
    TaskReadArgs,
    TaskRefArgs,
    TaskSubmitArgs,
    TaskSubmitManyArgs,
    TaskSubmitManyResult,
    TaskUploadArgs,
    TaskUploadResult,
    TaskWaitArgs,
)
from cfn_client.wire.schema.system import (
    ConfigResetArgs,
    ConfigResetResult,
    ConfigSetArgs,
    ConfigSetResult,
    ConfigShowArgs,
    ConfigShowResult,
    ConfigValidateArgs,
    ConfigValidateResult,
    DoctorArgs,
    DoctorResult,
    PingArgs,
    PingResult,
    StatusArgs,
    StatusResult,
    WebLoginArgs,
    WebLoginResult,
)
from cfn_client.wire.schema.team import (
    TeamAssignArgs,
    TeamInfo,
    TeamListArgs,
    TeamRoleCreateArgs,
    TeamSyncArgs,
    TeamSyncResult,
)
from cfn_client.wire.schema.workflow import (
    EpicInfo,
    EpicListArgs,
    EpicListResult,
    EpicRefArgs,
    EpicStartArgs,
)


@dataclass(frozen=True, slots=True)
class OpSpec:
    """What an op takes, returns, and who may call it."""

    args: type[Args]
    result: type[Result]
    role: Role
    streaming: bool = False


OPS: dict[str, OpSpec] = {
    "hello": OpSpec(HelloArgs, HelloResult, Role.viewer),
    "ping": OpSpec(PingArgs, PingResult, Role.viewer),
    "status": OpSpec(StatusArgs, StatusResult, Role.viewer),
    "doctor": OpSpec(DoctorArgs, DoctorResult, Role.viewer),
    "config.show": OpSpec(ConfigShowArgs, ConfigShowResult, Role.viewer),
    "config.set": OpSpec(ConfigSetArgs, ConfigSetResult, Role.admin),
    "config.reset": OpSpec(ConfigResetArgs, ConfigResetResult, Role.admin),
    "config.validate": OpSpec(ConfigValidateArgs, ConfigValidateResult, Role.viewer),
    "web.login": OpSpec(WebLoginArgs, WebLoginResult, Role.viewer),
    # teams: roles that grant access roles and agent pools
    "team.role_create": OpSpec(TeamRoleCreateArgs, TeamInfo, Role.admin),
    "team.assign": OpSpec(TeamAssignArgs, TeamInfo, Role.admin),
    "team.list": OpSpec(TeamListArgs, TeamInfo, Role.viewer),
    "team.sync": OpSpec(TeamSyncArgs, TeamSyncResult, Role.admin),
    # swarms
    "swarm.init": OpSpec(SwarmInitArgs, SwarmInfo, Role.operator),
    "swarm.list": OpSpec(SwarmListArgs, SwarmListResult, Role.viewer),
    "swarm.status": OpSpec(SwarmStatusArgs, SwarmStatusResult, Role.viewer),
    "swarm.scale": OpSpec(SwarmScaleArgs, SwarmScaleResult, Role.operator),
    "swarm.destroy": OpSpec(SwarmDestroyArgs, SwarmDestroyResult, Role.operator),
    "swarm.reset": OpSpec(SwarmResetArgs, SwarmDestroyResult, Role.admin),
    "swarm.broadcast": OpSpec(SwarmBroadcastArgs, DeliveriesResult, Role.operator),
    # agents
    "agent.create": OpSpec(AgentCreateArgs, AgentListResult, Role.operator),
    "agent.list": OpSpec(AgentListArgs, AgentListResult, Role.viewer),
    "agent.status": OpSpec(AgentRefArgs, AgentInfo, Role.viewer),
    "agent.terminate": OpSpec(AgentTerminateArgs, AgentInfo, Role.operator),
    "agent.restart": OpSpec(AgentRefArgs, AgentInfo, Role.operator),
    "agent.reset": OpSpec(AgentRefArgs, AgentInfo, Role.operator),
    "agent.send": OpSpec(AgentSendArgs, DeliveriesResult, Role.operator),
    "agent.debug": OpSpec(AgentDebugArgs, AgentDebugResult, Role.operator),  # logs: task text
    # tasks
    "task.submit": OpSpec(TaskSubmitArgs, TaskInfo, Role.operator),
    "task.submit_many": OpSpec(TaskSubmitManyArgs, TaskSubmitManyResult, Role.operator),
    "task.list": OpSpec(TaskListArgs, TaskListResult, Role.viewer),
    "task.status": OpSpec(TaskRefArgs, TaskInfo, Role.viewer),
    "task.cancel": OpSpec(TaskRefArgs, TaskInfo, Role.operator),
    "task.retry": OpSpec(TaskRefArgs, TaskInfo, Role.operator),
    "task.wait": OpSpec(TaskWaitArgs, TaskListResult, Role.viewer),
    "task.clean": OpSpec(TaskCleanArgs, CountResult, Role.operator),
    "task.upload": OpSpec(TaskUploadArgs, TaskUploadResult, Role.operator),
    "task.read": OpSpec(TaskReadArgs, TaskChunk, Role.viewer),
    "dlq.list": OpSpec(DlqListArgs, TaskListResult, Role.viewer),
    "dlq.requeue": OpSpec(DlqRequeueArgs, CountResult, Role.operator),
    # events
    "events.list": OpSpec(EventsArgs, EventsResult, Role.viewer),
    "events.follow": OpSpec(EventsArgs, Event, Role.viewer, streaming=True),
    # CFN loop runs
    "loop.start": OpSpec(LoopStartArgs, RunInfo, Role.operator),
    "loop.status": OpSpec(LoopRefArgs, RunInfo, Role.viewer),
    "loop.list": OpSpec(LoopListArgs, LoopListResult, Role.viewer),
    "loop.follow": OpSpec(LoopFollowArgs, Event, Role.viewer, streaming=True),
    "loop.approve": OpSpec(LoopApproveArgs, RunInfo, Role.operator),
    "loop.reject": OpSpec(LoopRejectArgs, RunInfo, Role.operator),
    "loop.extend": OpSpec(LoopExtendArgs, RunInfo, Role.operator),
    "loop.cancel": OpSpec(LoopCancelArgs, RunInfo, Role.operator),
    "loop.backlog": OpSpec(LoopRefArgs, LoopBacklogResult, Role.viewer),
    "loop.apply": OpSpec(LoopApplyArgs, LoopApplyResult, Role.operator),
    "loop.clean": OpSpec(LoopRefArgs, LoopCleanResult, Role.operator),
    # epics: phases of runs in dependency order
    "epic.start": OpSpec(EpicStartArgs, EpicInfo, Role.operator),
    "epic.status": OpSpec(EpicRefArgs, EpicInfo, Role.viewer),
    "epic.list": OpSpec(EpicListArgs, EpicListResult, Role.viewer),
    # observability
    "metrics.agents": OpSpec(MetricsArgs, MetricsResult, Role.viewer),
    "logs.export": OpSpec(LogsExportArgs, LogsPage, Role.admin),  # the audit trail too
    # snapshots: every swarm's records, out and back in
    "snapshot.export": OpSpec(SnapshotExportArgs, SnapshotChunk, Role.admin),
    "snapshot.import": OpSpec(SnapshotImportArgs, SnapshotImportResult, Role.admin),
    "audit.search": OpSpec(AuditSearchArgs, AuditSearchResult, Role.admin),
    "redis.info": OpSpec(RedisInfoArgs, RedisInfoResult, Role.viewer),
}


def lookup_op(op: str) -> OpSpec:
    """Return the spec of ``op`` or raise ``unknown_op`` listing close matches."""
    spec = OPS.get(op)
    if spec is None:
        import difflib  # only for a mistyped op (cfnctl never sends one)

        close = difflib.get_close_matches(op, list(OPS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ProtocolError(
            f"unknown op {op!r}{hint}",
            code="unknown_op",
            details={"op": op, "close_matches": close, "known_ops": sorted(OPS)},
        )
    return spec
