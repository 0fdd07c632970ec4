"""Output for humans (aligned text, no extra dependencies) and for scripts (``--json``).

Every function returns a string; the CLI decides where it goes. ``--json``
prints one JSON document per command, and one JSON line per event when streaming.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from cfn_client.wire.errors import CfnError
from cfn_client.wire.protocol import (
    Check,
    ConfigResetResult,
    ConfigSetResult,
    ConfigShowResult,
    ConfigValidateResult,
    DoctorResult,
    PingResult,
    StatusResult,
)
from cfn_client.wire.schema.swarm import (
    TERMINAL_TASK_STATUSES,
    AgentInfo,
    CountResult,
    DeliveriesResult,
    Event,
    SwarmDestroyResult,
    SwarmInfo,
    SwarmListResult,
    SwarmScaleResult,
    SwarmStatusResult,
    TaskInfo,
)

_encoder = msgspec.json.Encoder()

# Error details worth a line of their own under the message, in this order.
ERROR_DETAIL_KEYS = ("file", "key", "value", "expected", "socket", "retry_after_s", "fix")


# --------------------------------------------------------------------------- JSON


def to_json(obj: Any) -> str:
    """One compact JSON document (Structs, lists and dicts alike)."""
    return _encoder.encode(obj).decode()


def json_lines(items: Iterable[Any]) -> Iterable[str]:
    """One JSON document per item, for streams."""
    return (to_json(item) for item in items)


def error_document(err: CfnError) -> dict[str, Any]:
    """The ``--json`` form of an error: ``{"ok": false, "error": {...}}``."""
    return {
        "ok": False,
        "error": {
            "code": err.instance_code,
            "message": err.message,
            "details": msgspec.to_builtins(err.details, str_keys=True),
            "exit_code": err.exit_code,
        },
    }


def cli_error_document(code: str, message: str, exit_code: int) -> dict[str, Any]:
    """The ``--json`` form of an error cfnctl found itself (bad usage, unreadable file)."""
    error = {"code": code, "message": message, "details": {}, "exit_code": exit_code}
    return {"ok": False, "error": error}


def error_text(err: CfnError, prog: str = "cfnctl") -> str:
    """``cfnctl: error[<code>]: <message>`` plus one indented line per notable detail."""
    lines = [f"{prog}: error[{err.instance_code}]: {err.message}"]
    for key in ERROR_DETAIL_KEYS:
        value = err.details.get(key)
        if value is not None and str(value) not in err.message:
            lines.append(f"  {key}: {format_value(value)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- primitives


def format_value(value: Any) -> str:
    """A config or detail value as a human reads it: TOML-ish scalars, JSON for the rest."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)  # exact: "0.8", "10.0", never 1e+06
    return to_json(value)


def format_duration(seconds: float) -> str:
    """``42.0s``, ``5m 03s``, ``3h 02m``, ``2d 04h``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    days, rem = divmod(s, 86_400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def format_ms(ms: float | None) -> str:
    """Milliseconds with sensible precision."""
    if ms is None:
        return "-"
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.0f} ms"


def _cell(value: Any) -> str:
    # One row per line: a newline in a value would break the columns.
    return str(value).replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    cells = [[_cell(c) for c in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def fields(pairs: Iterable[tuple[str, Any]]) -> str:
    """``label: value`` lines with aligned values; labels starting with spaces nest."""
    items = [(label, format_value(value)) for label, value in pairs]
    width = max((len(label) for label, _ in items), default=0) + 1
    return "\n".join(f"{(label + ':').ljust(width)} {value}".rstrip() for label, value in items)


# --------------------------------------------------------------------------- op results


def status(result: StatusResult, verbose: bool = False) -> str:
    """``cfnctl status``."""
    store = result.store
    pairs: list[tuple[str, Any]] = [
        (
            "daemon",
            f"cfnd {result.version}, pid {result.pid}, up {format_duration(result.uptime_s)}",
        ),
        ("socket", result.socket),
        ("state dir", result.state_dir),
        ("config", ", ".join(result.config_sources) or "defaults"),
        ("redis", f"{store.mode} ({'available' if store.available else 'UNAVAILABLE'})"),
        ("  url", store.url),
        ("  version", store.version or "-"),
        ("  latency", format_ms(store.latency_ms)),
    ]
    if store.error:
        pairs.append(("  error", store.error))
    if store.retry_in_s is not None and not store.available:
        pairs.append(("  retry in", f"{store.retry_in_s:.1f}s"))
    if verbose:
        pairs.append(("  key prefix", store.key_prefix))
        if store.embedded_pid is not None:
            pairs.append(("  embedded pid", store.embedded_pid))
        if store.aof_enabled is not None:
            pairs.append(("  aof", "on" if store.aof_enabled else "off"))
        if store.rdb_saves is not None:
            pairs.append(("  rdb saves", store.rdb_saves or "off"))
    total = result.swarms.total
    pairs.append(("swarms", "unknown (store unavailable)" if total is None else total))
    if verbose and result.server is not None:
        srv = result.server
        pairs += [
            ("server", ""),
            ("  connections", srv.connections),
            ("  requests", srv.requests_total),
            ("  errors", srv.errors_total),
            ("  in flight", srv.inflight),
        ]
    return fields(pairs)


def store_unavailable_hint(result: StatusResult) -> str:
    """The line ``status`` adds (on stderr) when Redis is down."""
    store = result.store
    retry = f"; next attempt in {store.retry_in_s:.1f}s" if store.retry_in_s is not None else ""
    why = f": {store.error}" if store.error else ""
    return (
        f"Redis is unavailable ({store.mode} at {store.url}){why}. cfnd keeps retrying{retry}; "
        "commands that need the store fail until it is back — check the Redis server, "
        "then retry `cfnctl status`"
    )


def ping(result: PingResult, rtt_ms: float) -> str:
    """``cfnctl ping``."""
    return f"pong from cfnd in {format_ms(rtt_ms)}"


def doctor(result: DoctorResult) -> str:
    """``cfnctl doctor``: one row per check; the fix goes under a check that did not pass."""
    rows: list[list[str]] = []
    for check in result.checks:
        rows.append([check.name, check_status(check), check.detail])
        if not check.ok and check.fix:
            rows.append(["", "", f"fix: {check.fix}"])
    failed = sum(not c.ok and not c.warning for c in result.checks)
    warned = sum(not c.ok and c.warning for c in result.checks)
    summary = f"{failed} check(s) failed" if failed else "all checks passed"
    if warned:
        summary += f", {warned} warning(s)"
    return table(["CHECK", "RESULT", "DETAIL"], rows) + "\n\n" + summary


def check_status(check: Check) -> str:
    """``ok``, ``WARN`` (failed but only advisory) or ``FAIL``."""
    if check.ok:
        return "ok"
    return "WARN" if check.warning else "FAIL"


def config_show(result: ConfigShowResult) -> str:
    """``cfnctl config show``."""
    rows = [[e.key, format_value(e.value), e.source] for e in result.entries]
    return table(["KEY", "VALUE", "SOURCE"], rows)


def config_set(result: ConfigSetResult) -> str:
    """``cfnctl config set``."""
    return (
        f"{result.key} = {format_value(result.value)} "
        f"(was {format_value(result.previous)}; source runtime)"
    )


def config_reset(result: ConfigResetResult) -> str:
    """``cfnctl config reset``."""
    if not result.reset:
        return "no runtime overrides to reset"
    return f"reset {len(result.reset)} runtime override(s): {', '.join(result.reset)}"


def config_validate(result: ConfigValidateResult) -> str:
    """``cfnctl config validate``."""
    return f"{result.source}: {'valid' if result.valid else 'INVALID'}"


# --------------------------------------------------------------------------- swarms

# Long free text (task text, errors, event values) is cut to this many characters in tables.
CELL_WIDTH = 48
# Lines of a failed task's stderr that `run --wait` shows.
STDERR_TAIL_LINES = 20


def now_ms() -> int:
    return int(time.time() * 1000)


def shorten(text: str, width: int = CELL_WIDTH) -> str:
    """One line of at most ``width`` characters (``...`` marks a cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def format_time(ms: int) -> str:
    """A local timestamp: ``14:03:07.125`` today, ``2024-05-01 14:03:07`` before."""
    if ms <= 0:
        return "-"
    when = datetime.fromtimestamp(ms / 1000)
    if when.date() == datetime.now().date():
        return when.strftime("%H:%M:%S.") + f"{ms % 1000:03d}"
    return when.strftime("%Y-%m-%d %H:%M:%S")


def format_age(ms: int | None, now: int | None = None) -> str:
    """How long ago ``ms`` (epoch ms) was, as ``format_duration``; ``-`` when unknown."""
    if not ms:
        return "-"
    return format_duration(max(0, (now if now is not None else now_ms()) - ms) / 1000)


def format_run_time(ms: float) -> str:
    """A task's run time: ``12 ms`` below a second, else ``4.2s``, ``3m 05s``."""
    return format_ms(ms) if ms < 1000 else format_duration(ms / 1000)


def format_counts(counts: Mapping[str, int]) -> str:
    """``queued 2, running 1`` (``none`` when every count is zero)."""
    parts = [f"{name} {n}" for name, n in counts.items() if n]
    return ", ".join(parts) or "none"


def swarm_init(info: SwarmInfo) -> str:
    """``cfnctl swarm init``."""
    return (
        f"swarm {swarm_label(info)} created: {info.topology}, {info.strategy}, "
        f"up to {info.max_agents} agents"
    )


def swarm_label(info: SwarmInfo) -> str:
    """``web`` or, when the name differs from the id, ``s-1 (web)``."""
    return info.id if info.name in ("", info.id) else f"{info.id} ({info.name})"


def swarm_list(result: SwarmListResult) -> str:
    """``cfnctl swarm list``."""
    if not result.swarms:
        return "no swarms (create one with `cfnctl swarm init TOPOLOGY MAX_AGENTS`)"
    now = now_ms()
    rows = [
        [s.id, s.name, s.topology, s.strategy, f"{s.agents}/{s.max_agents}", s.status,
         format_age(s.created_ms, now)]
        for s in result.swarms
    ]  # fmt: skip
    return table(["ID", "NAME", "TOPOLOGY", "STRATEGY", "AGENTS", "STATUS", "AGE"], rows)


def swarm_status(result: SwarmStatusResult, verbose: bool = False) -> str:
    """``cfnctl swarm status``: the swarm, its queues and tasks, then its agents."""
    info = result.swarm
    head = fields(
        [
            ("swarm", swarm_label(info)),
            ("status", info.status),
            ("topology", f"{info.topology}, {info.strategy}"),
            ("agents", f"{len(result.agents)} of at most {info.max_agents}"),
            ("created", format_time(info.created_ms)),
            ("queued", format_counts(result.queues)),
            ("tasks", format_counts(result.tasks)),
        ]
    )
    body = agents_table(result.agents, verbose) if result.agents else "no agents"
    return head + "\n\n" + body


def agents_table(agents: Sequence[AgentInfo], verbose: bool = False) -> str:
    """Agents, one per row; ``verbose`` adds where they run and what they can do."""
    headers = ["ID", "TYPE", "ROLE", "STATUS", "TASK", "HEARTBEAT", "DONE/FAILED"]
    if verbose:
        headers += ["HOST", "PID", "RESTARTS", "CAPABILITIES"]
    rows = []
    for a in agents:
        heartbeat = (
            "-" if a.heartbeat_age_ms is None else format_duration(a.heartbeat_age_ms / 1000)
        )
        row: list[Any] = [
            a.id, a.type, a.role, a.status, a.current_task or "-", heartbeat,
            f"{a.tasks_done}/{a.tasks_failed}",
        ]  # fmt: skip
        if verbose:
            row += [a.host or "-", a.pid or "-", a.restarts, ",".join(a.capabilities) or "-"]
        rows.append(row)
    return table(headers, rows)


def agent_info(agent: AgentInfo) -> str:
    """``cfnctl agent status``."""
    pairs: list[tuple[str, Any]] = [
        ("agent", agent.id),
        ("swarm", agent.swarm),
        ("type", agent.type),
        ("role", agent.role),
        ("status", agent.status),
        ("current task", agent.current_task or "-"),
        ("heartbeat", _age_text(agent.heartbeat_age_ms)),
        ("tasks done", agent.tasks_done),
        ("tasks failed", agent.tasks_failed),
        ("capabilities", ", ".join(agent.capabilities) or "-"),
        ("host", f"{agent.host or '-'}{'' if agent.local else ' (remote)'}"),
        ("pid", agent.pid if agent.pid is not None else "-"),
        ("parent", agent.parent or "-"),
        ("started", format_time(agent.started_ms)),
        ("restarts", agent.restarts),
    ]
    return fields(pairs)


def _age_text(ms: int | None) -> str:
    return "-" if ms is None else f"{format_duration(ms / 1000)} ago"


def agent_change(agent: AgentInfo, action: str, requested: str | None = None) -> str:
    """One line after terminate/restart/reset: ``agent a1 (shell) terminated; now draining``.

    ``requested``: the id asked for, when the answer may be another agent (a restart's).
    """
    if requested is not None and requested != agent.id:
        return f"agent {requested} {action} as {agent.id} ({agent.type}); now {agent.status}"
    return f"agent {agent.id} ({agent.type}) {action}; now {agent.status}"


def swarm_scale(result: SwarmScaleResult) -> str:
    """``cfnctl swarm scale``."""
    if not result.spawned and not result.stopping:
        return f"swarm {result.swarm}: already at that size"
    parts = []
    if result.spawned:
        parts.append(f"spawned {len(result.spawned)} ({', '.join(result.spawned)})")
    if result.stopping:
        parts.append(f"stopping {len(result.stopping)} ({', '.join(result.stopping)})")
    return f"swarm {result.swarm}: " + "; ".join(parts)


def swarm_destroy(result: SwarmDestroyResult, action: str = "destroyed") -> str:
    """``cfnctl swarm destroy`` / ``swarm reset``."""
    stopped = result.stopped_agents
    what = f"stopped {len(stopped)} agent(s): {', '.join(stopped)}" if stopped else "no agents"
    return f"swarm {result.swarm} {action}; {what}"


def delivery_paths(result: DeliveriesResult) -> str:
    """One line per delivery: ``a1 -> hub -> a3``."""
    return "\n".join(" -> ".join(d.path) if d.path else d.to for d in result.deliveries)


def broadcast(result: DeliveriesResult) -> str:
    """``cfnctl swarm broadcast``: a count, then each delivery's path."""
    n = len(result.deliveries)
    if not n:
        return f"message {result.message_id}: no agent to deliver to"
    return f"message {result.message_id} delivered to {n} agent(s):\n" + delivery_paths(result)


# --------------------------------------------------------------------------- tasks


def tasks_table(tasks: Sequence[TaskInfo], errors: bool = False, empty: str = "no tasks") -> str:
    """Tasks, one per row; ``errors`` adds each task's last error."""
    if not tasks:
        return empty
    now = now_ms()
    headers = ["ID", "STATUS", "PRIORITY", "TYPE", "AGENT", "ATTEMPTS", "AGE", "TEXT"]
    if errors:
        headers.append("ERROR")
    rows = []
    for t in tasks:
        row = [
            t.id, t.status, t.priority, t.type, t.agent or "-", f"{t.attempts}/{t.max_attempts}",
            format_age(t.created_ms, now), shorten(t.text, 40),
        ]  # fmt: skip
        if errors:
            row.append(shorten(task_error(t) or "-"))
        rows.append(row)
    return table(headers, rows)


def task_error(task: TaskInfo) -> str | None:
    """The most telling error of a task: its result's, else its own."""
    if task.result is not None and task.result.error:
        return task.result.error
    return task.error


def task_info(task: TaskInfo) -> str:
    """``cfnctl task status``: the task, its result, then its output and stderr."""
    pairs: list[tuple[str, Any]] = [
        ("task", task.id),
        ("swarm", task.swarm),
        ("status", task.status),
        ("text", task.text),
        ("type", task.type),
        ("priority", task.priority),
        ("attempts", f"{task.attempts}/{task.max_attempts}"),
        ("agent", task.agent or "-"),
        ("created", format_time(task.created_ms)),
        ("updated", format_time(task.updated_ms)),
        ("timeout", "-" if task.timeout_s is None else f"{task.timeout_s:g}s"),
    ]
    if task.error:
        pairs.append(("error", task.error))
    res = task.result
    blocks: list[str] = []
    if res is not None:
        pairs += [
            ("result", "ok" if res.ok else "FAILED"),
            ("  exit code", "-" if res.exit_code is None else res.exit_code),
            ("  agent", res.agent),
            ("  attempt", res.attempt),
            ("  duration", format_run_time(res.duration_ms)),
        ]
        if res.error and res.error != task.error:
            pairs.append(("  error", res.error))
        if res.confidence is not None:
            pairs.append(("  confidence", res.confidence))
        if res.vote is not None:
            pairs.append(("  vote", res.vote))
        if res.feedback is not None:
            pairs.append(("  feedback", res.feedback))
        trunc = " (truncated)" if res.truncated else ""
        for label, text in (("output", res.output), ("stderr", res.stderr)):
            if text:
                blocks.append(f"{label}{trunc}:\n" + indent(text))
    return "\n\n".join([fields(pairs), *blocks])


def indent(text: str, prefix: str = "  ") -> str:
    """Every line of ``text`` indented (no trailing newline)."""
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())


def task_change(task: TaskInfo, action: str) -> str:
    """One line after cancel/retry: ``task t1 cancelled; now cancelled``."""
    return f"task {task.id} {action}; now {task.status}"


def wait_outcomes(tasks: Sequence[TaskInfo]) -> str:
    """``cfnctl task wait``: one row per waited task, then a summary."""
    if not tasks:
        return "no tasks to wait for"
    rows = []
    for t in tasks:
        res = t.result
        exit_code = "-" if res is None or res.exit_code is None else res.exit_code
        duration = "-" if res is None else format_run_time(res.duration_ms)
        rows.append([t.id, t.status, exit_code, t.agent or "-", duration,
                     shorten(task_error(t) or "", 40) or "-"])  # fmt: skip
    ok = sum(t.status == "succeeded" for t in tasks)
    unfinished = sum(t.status not in TERMINAL_TASK_STATUSES for t in tasks)
    summary = f"{ok} of {len(tasks)} succeeded"
    if unfinished:
        summary += f", {unfinished} still unfinished"
    return table(["ID", "STATUS", "EXIT", "AGENT", "DURATION", "ERROR"], rows) + "\n\n" + summary


def stderr_tail(task: TaskInfo, lines: int = STDERR_TAIL_LINES) -> str:
    """What ``run --wait`` prints on stderr for a task that did not succeed."""
    head = f"task {task.id} {task.status}"
    res = task.result
    if res is not None and res.exit_code is not None:
        head += f" (exit code {res.exit_code})"
    err = task_error(task)
    out = [head + (f": {err}" if err else "")]
    if res is not None and res.stderr:
        tail = res.stderr.rstrip("\n").splitlines()[-lines:]
        out.append("\n".join(tail))
    return "\n".join(out)


def count(result: CountResult, what: str) -> str:
    """``removed 3 finished task(s)``-style lines."""
    return what.format(n=result.count)


# --------------------------------------------------------------------------- events

EVENT_TYPE_WIDTH = 18


def event_data(data: Mapping[str, Any]) -> str:
    """An event's data as ``key=value`` pairs, long values cut."""
    return " ".join(f"{k}={shorten(format_value(v), CELL_WIDTH)}" for k, v in data.items())


def events_table(events: Sequence[Event]) -> str:
    """``cfnctl events``."""
    if not events:
        return "no events"
    rows = [[format_time(e.ts_ms), e.type, event_data(e.data)] for e in events]
    return table(["TIME", "TYPE", "DATA"], rows)


def event_line(event: Event) -> str:
    """One followed event (no table: columns cannot be sized ahead of a stream)."""
    line = f"{format_time(event.ts_ms)}  {event.type.ljust(EVENT_TYPE_WIDTH)}  "
    return (line + event_data(event.data)).rstrip()
