"""Agent types: configured ``[agent_types.NAME]`` tables plus built-ins.

Built-ins: ``shell`` runs the task text with ``sh -c``; ``checker`` (a validator) runs
the task text as a check command (kind ``check``: its exit status is its vote); the
seed's types (coder,
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
from cfn_daemon.agent.checks import program_problem
from cfn_daemon.agent.executors import CLAUDE_TYPES, ExecutorConfig, builtin_executor
from cfn_daemon.settings.schema import AgentTypeConfig

__all__ = ["AgentTypeSpec", "all_specs", "binary_problem", "builtin_names", "decode", "encode"]
__all__ += ["from_config", "resolve", "runs_text_as_code"]

DEFAULT_ROLES: dict[str, AgentRole] = {
    "reviewer": "validator",
    "tester": "validator",
    "security-specialist": "validator",
    "architect": "coordinator",
    "product-owner": "owner",
    "checker": "validator",
}


# Published to Redis and decoded by cfn-agents that may be older or newer than cfnd:
# unknown fields are ignored (no forbid_unknown_fields) and defaults are not written.
class AgentTypeSpec(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Everything an agent of one type needs to run."""

    name: str
    executor: ExecutorConfig
    role: AgentRole = "implementer"
    capabilities: list[str] = []
    concurrency: int = 1
    required: bool = False  # a validator whose reject fails the round


# Keys of AgentTypeConfig that describe the agent, not how it runs its tasks.
SPEC_KEYS = frozenset({"role", "capabilities", "concurrency", "required", "text_is_code"})


def from_config(name: str, cfg: AgentTypeConfig) -> AgentTypeSpec:
    """The spec of a configured type: every executor key passes through (the older
    ``claude_binary``/``claude_args`` become ``binary``/``args`` in ExecutorConfig)."""
    fields = {
        key: getattr(cfg, key)
        for key in cfg.__struct_fields__
        if key not in SPEC_KEYS and key in ExecutorConfig.__struct_fields__
    }
    executor = msgspec.convert(fields, ExecutorConfig)
    return AgentTypeSpec(
        name=name,
        executor=executor,
        role=cfg.role,
        capabilities=list(cfg.capabilities),
        concurrency=cfg.concurrency,
        required=cfg.required,
    )


def builtin_names() -> list[str]:
    return ["shell", "checker", *CLAUDE_TYPES]


def require_runnable(name: str, configured: Mapping[str, AgentTypeConfig]) -> AgentTypeSpec:
    """The spec of ``name``, or ``invalid_args`` saying which program is missing and how
    to install it: refused now rather than after every retry of every task."""
    spec = resolve(name, configured)
    problem = binary_problem(spec)
    if problem:
        raise InvalidArgs(f"agent type {name!r} cannot run: {problem}", details={"type": name})
    return spec


def binary_problem(spec: AgentTypeSpec) -> str | None:
    """Why agents of ``spec`` cannot start their program (which is missing, and how to
    install it or which key to set), or None when it is found. Kinds claude, codex,
    check, command and shell start one; python starts none."""
    return program_problem(spec.executor, spec.name)


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


CODE_KINDS = frozenset({"shell", "check"})
DEFAULT_TYPE = "coder"


def default_type(chosen: str | None, configured: Mapping[str, AgentTypeConfig]) -> str:
    """The agent type of a task submitted without one: ``chosen`` (``[swarm]
    default_type``), else a configured ``coder``, else the first configured non-shell
    implementer type, else the built-in ``coder``. Never ``shell``: free text is
    not a command line, unless a user says so (``--type shell``)."""
    if chosen:
        return chosen
    if DEFAULT_TYPE in configured:
        return DEFAULT_TYPE
    for name, cfg in configured.items():
        if cfg.kind != "shell" and not cfg.text_is_code and cfg.role == "implementer":
            return name
    return DEFAULT_TYPE


def runs_text_as_code(name: str, configured: Mapping[str, AgentTypeConfig]) -> bool:
    """True when agents of ``name`` run a task's text as code (kinds shell and check,
    or a configured type marked ``text_is_code``): submitting text to it needs ``exec``."""
    if name in configured and configured[name].text_is_code:
        return True
    return resolve(name, configured).executor.kind in CODE_KINDS


def all_specs(configured: Mapping[str, AgentTypeConfig]) -> dict[str, AgentTypeSpec]:
    return {n: resolve(n, configured) for n in sorted({*configured, *builtin_names()})}


def encode(spec: AgentTypeSpec) -> bytes:
    return msgspec.json.encode(spec)


def decode(data: Any) -> AgentTypeSpec:
    return msgspec.json.decode(data, type=AgentTypeSpec)
