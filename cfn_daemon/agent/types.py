"""Agent types: configured ``[agent_types.NAME]`` tables plus built-ins.

Built-ins: ``shell`` runs the task text with ``sh -c``; the seed's types (coder,
reviewer, tester, researcher, architect, security-specialist, product-owner) use
the ``claude`` preset (``claude -p <task>``). cfnd publishes the effective specs
to Redis (``cfn:agent_types``) so a remote ``cfn-agent --type T`` runs a type the
same way a local one does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from cfn_client.wire.errors import InvalidArgs
from cfn_client.wire.schema.swarm import AgentRole
from cfn_daemon.agent.executors import CLAUDE_TYPES, ExecutorConfig, builtin_executor
from cfn_daemon.settings.schema import AgentTypeConfig

DEFAULT_ROLES: dict[str, AgentRole] = {
    "reviewer": "validator",
    "tester": "validator",
    "security-specialist": "validator",
    "architect": "coordinator",
    "product-owner": "owner",
}


class AgentTypeSpec(msgspec.Struct, kw_only=True):
    """Everything an agent of one type needs to run."""

    name: str
    executor: ExecutorConfig
    role: AgentRole = "implementer"
    capabilities: list[str] = []
    concurrency: int = 1


def from_config(name: str, cfg: AgentTypeConfig) -> AgentTypeSpec:
    executor = msgspec.convert(
        {
            "kind": cfg.kind,
            "exec": cfg.exec,
            "entry": cfg.entry,
            "workdir": cfg.workdir,
            "env": cfg.env,
            "timeout_s": cfg.timeout_s,
        },
        ExecutorConfig,
    )
    return AgentTypeSpec(
        name=name,
        executor=executor,
        role=cfg.role,
        capabilities=list(cfg.capabilities),
        concurrency=cfg.concurrency,
    )


def builtin_names() -> list[str]:
    return ["shell", *CLAUDE_TYPES]


def resolve(name: str, configured: Mapping[str, AgentTypeConfig]) -> AgentTypeSpec:
    """The spec of ``name``: configured first, then built-in; else ``invalid_args``."""
    if name in configured:
        try:
            return from_config(name, configured[name])
        except msgspec.ValidationError as exc:
            raise InvalidArgs(f"[agent_types.{name}] is invalid: {exc}") from None
    executor = builtin_executor(name)
    if executor is None:
        known = sorted({*configured, *builtin_names()})
        raise InvalidArgs(
            f"unknown agent type {name!r}: configure [agent_types.{name}] in cfnd.toml "
            f"or use one of {', '.join(known)}",
            details={"type": name, "known_types": known},
        )
    return AgentTypeSpec(name=name, executor=executor, role=DEFAULT_ROLES.get(name, "implementer"))


def all_specs(configured: Mapping[str, AgentTypeConfig]) -> dict[str, AgentTypeSpec]:
    return {n: resolve(n, configured) for n in sorted({*configured, *builtin_names()})}


def encode(spec: AgentTypeSpec) -> bytes:
    return msgspec.json.encode(spec)


def decode(data: Any) -> AgentTypeSpec:
    return msgspec.json.decode(data, type=AgentTypeSpec)
