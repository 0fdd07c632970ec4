"""The values executors work with: their config, a task's input and context, the result.

Split from ``executors`` so that the presets (``presets``) and checks (``checks``) can
use them without an import cycle; ``cfn_daemon.agent.executors`` re-exports them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from cfn_client.wire.errors import ConfigError

__all__ = ["KINDS", "ExecResult", "ExecutorConfig", "TaskContext", "TaskInput"]
__all__ += ["parse_executor_config", "substitute"]

Kind = Literal["command", "claude", "codex", "check", "python", "shell"]
Vote = Literal["approve", "reject"]
KINDS: tuple[Kind, ...] = ("command", "claude", "codex", "check", "python", "shell")
PRESET_KINDS = ("claude", "codex")
DEFAULT_BINARY = {"claude": "claude", "codex": "codex"}
_ENTRY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_PLACEHOLDER = re.compile(r"\{(task|task_id|swarm|agent_id|agent_type|attempt)\}")
_VALIDATION_PATTERNS = (
    re.compile(r"^`(?P<key>\w+)`: (?P<rest>.*)$"),  # our __post_init__ messages
    re.compile(r"^(?P<rest>.*) - at `\$\.(?P<key>\w+)"),
    re.compile(r"^Object (contains unknown|missing required) field `(?P<key>\w+)`"),
)


# Not forbid_unknown_fields: cfnd publishes specs to Redis and a remote cfn-agent of an
# older version must still decode a spec a newer cfnd wrote. Config tables are checked
# strictly elsewhere (AgentTypeConfig, parse_executor_config). omit_defaults keeps the
# published JSON small and decodable by agents that predate the newer fields.
class ExecutorConfig(msgspec.Struct, kw_only=True, omit_defaults=True):
    """How an agent type runs its tasks (see ``cfn_daemon.agent.executors`` for each kind)."""

    kind: Kind
    exec: list[str] = []
    entry: str | None = None
    workdir: str | None = None
    env: dict[str, str] = {}
    secrets: dict[str, str] = {}  # NAME -> "env:VAR" | "file:PATH", resolved here
    timeout_s: float | None = None
    max_output_bytes: int = 1 << 20
    # Agent CLI presets (claude, codex).
    binary: str | None = None
    args: list[str] = []
    model: str | None = None
    permission_mode: str | None = None
    allowed_tools: list[str] = []
    max_turns: int | None = None
    resume: bool = True
    usd_per_mtok_input: float = 0.0
    usd_per_mtok_output: float = 0.0
    # Older spellings of binary/args; __post_init__ moves them over.
    claude_binary: str | None = None
    claude_args: list[str] = []

    def __post_init__(self) -> None:
        # "`field`: ..." lets config errors name the exact key.
        if self.kind not in KINDS:
            raise ValueError(f"`kind`: expected one of {', '.join(KINDS)}")
        self._fold_old_spellings()
        if self.kind == "command" and not (self.exec and self.exec[0]):
            raise ValueError("`exec`: expected a non-empty argv list for kind 'command'")
        if self.kind == "check" and self.exec and not self.exec[0]:
            raise ValueError("`exec`: expected a program as the first argument")
        if self.kind not in ("command", "check") and self.exec:
            raise ValueError(f"`exec`: expected no argv for kind {self.kind!r}")
        if self.kind == "python" and not (self.entry and _ENTRY.match(self.entry)):
            raise ValueError("`entry`: expected 'pkg.module:function' for kind 'python'")
        if self.kind != "python" and self.entry is not None:
            raise ValueError(f"`entry`: expected no entry point for kind {self.kind!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError("`timeout_s`: expected a number of seconds > 0")
        if self.max_output_bytes < 1:
            raise ValueError("`max_output_bytes`: expected an integer >= 1")
        if self.binary is not None and not self.binary:
            raise ValueError("`binary`: expected a command name or path")
        if self.max_turns is not None and self.max_turns < 1:
            raise ValueError("`max_turns`: expected an integer >= 1")
        if min(self.usd_per_mtok_input, self.usd_per_mtok_output) < 0:
            raise ValueError("`usd_per_mtok_input`: expected a price >= 0")

    def _fold_old_spellings(self) -> None:
        # Older cfnd versions publish claude_binary="claude" for every kind: only a
        # conflicting value is an error, an equal one is simply folded in.
        if self.claude_binary is not None:
            if self.binary is not None and self.binary != self.claude_binary:
                raise ValueError("`claude_binary`: older spelling of `binary`; set only one")
            if not self.claude_binary:
                raise ValueError("`claude_binary`: expected a command name or path")
            if self.kind == "claude" or self.claude_binary != "claude":
                self.binary = self.claude_binary
            self.claude_binary = None
        if self.claude_args:
            if self.args and self.args != self.claude_args:
                raise ValueError("`claude_args`: older spelling of `args`; set only one")
            self.args, self.claude_args = list(self.claude_args), []

    @property
    def program(self) -> str | None:
        """The executable this config starts (argv[0]); None for kind ``python``."""
        if self.kind in PRESET_KINDS:
            return self.binary or DEFAULT_BINARY[self.kind]
        if self.kind in ("command", "check") and self.exec:
            return self.exec[0]
        if self.kind in ("shell", "check"):
            return "sh"
        return None


class TaskInput(msgspec.Struct, kw_only=True):
    """What the agent hands its executor (also the JSON a child reads on stdin)."""

    task_id: str
    swarm: str
    agent_id: str
    agent_type: str
    text: str
    attempt: int = 1
    context: dict[str, Any] = {}


TaskKind = Literal["implement", "validate", "decide", "check"]
Role = Literal["implementer", "validator", "owner"]


class TaskContext(msgspec.Struct, kw_only=True, frozen=True):
    """The parts of ``TaskInput.context`` executors act on (set by the CFN-loop runner).

    ``workspace``: the git worktree to run in (overrides ``workdir``); ``base_ref``: what
    the candidate is compared with; ``resume_session``: this implementer's previous CLI
    session; ``read_only``: the agent must not change files.
    """

    kind: TaskKind | None = None
    workspace: str | None = None
    base_ref: str | None = None
    resume_session: str | None = None
    read_only: bool = False

    @classmethod
    def of(cls, context: Mapping[str, Any]) -> TaskContext:
        """Lenient: a value of the wrong type counts as absent (the context is free-form)."""
        kind = context.get("kind")

        def text(key: str) -> str | None:
            value = context.get(key)
            return value if isinstance(value, str) and value else None

        return cls(
            kind=kind if kind in ("implement", "validate", "decide", "check") else None,
            workspace=text("workspace"),
            base_ref=text("base_ref"),
            resume_session=text("resume_session"),
            read_only=context.get("read_only") is True,
        )

    @property
    def role(self) -> Role:
        if self.kind == "decide":
            return "owner"
        if self.kind in ("validate", "check"):
            return "validator"
        return "implementer"

    @property
    def writes(self) -> bool:
        """May the agent change files? Only an implementer of a writable workspace."""
        return self.role == "implementer" and not self.read_only


class ExecResult(msgspec.Struct, kw_only=True):
    """The outcome of one task; ``error`` says why when ``ok`` is False."""

    ok: bool
    exit_code: int | None = None
    output: str = ""
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    confidence: float | None = None
    vote: Vote | None = None
    feedback: Any | None = None
    error: str | None = None
    duration_ms: float = 0.0
    # What an agent CLI reported about itself.
    session_id: str | None = None
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    num_turns: int = 0


def substitute(template: str, task: TaskInput) -> str:
    """Replace the known ``{placeholders}`` in one argument; everything else stays."""
    values = {"task": task.text, "task_id": task.task_id, "swarm": task.swarm}
    values |= {"agent_id": task.agent_id, "agent_type": task.agent_type}
    values["attempt"] = str(task.attempt)
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def parse_executor_config(data: Mapping[str, Any], *, source: str = "executor") -> ExecutorConfig:
    """Validate a mapping (e.g. a TOML table); raises ``ConfigError`` naming the key."""
    fields = ExecutorConfig.__struct_fields__
    unknown = [k for k in data if k not in fields] if isinstance(data, Mapping) else []
    if unknown:  # the Struct itself tolerates unknown fields (see its comment)
        name = str(unknown[0])
        known = f"unknown key; expected one of {', '.join(fields)}"
        raise ConfigError(
            f"{source}: key {name} = {data[name]!r} is invalid: {known}",
            details={"source": source, "key": name, "value": data[name], "expected": known},
        )
    try:
        return msgspec.convert(data, ExecutorConfig)
    except msgspec.ValidationError as exc:
        text = str(exc)
        key: str | None = None
        expected = text
        for pattern in _VALIDATION_PATTERNS:
            m = pattern.search(text)
            if m:
                key, expected = m.group("key"), m.groupdict().get("rest") or expected
                break
        if key == "kind":
            expected = f"{expected}; expected one of {', '.join(KINDS)}"
        value = data.get(key) if key and isinstance(data, Mapping) else None
        raise ConfigError(
            f"{source}: key {key or '<root>'} = {value!r} is invalid: {expected}",
            details={"source": source, "key": key, "value": value, "expected": expected},
        ) from None
