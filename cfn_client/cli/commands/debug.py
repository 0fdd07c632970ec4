"""``cfnctl debug AGENT``: one agent, everything cfn knows about it (guide §4)."""

from __future__ import annotations

import json

import click

from cfn_client.cli import completion as complete
from cfn_client.cli import render
from cfn_client.cli.env import CliEnv, pass_env
from cfn_client.wire.schema.debug import MAX_DEBUG_EVENTS, AgentDebugResult


@click.command()
@click.argument("agent_id", metavar="AGENT", shell_complete=complete.agent_ids)
@click.option("--verbose", "-v", is_flag=True, help="Add the raw record and a longer log tail.")
@click.option(
    "--events", "events", type=click.IntRange(0, MAX_DEBUG_EVENTS), default=None, metavar="N",
    help="How many of the agent's latest events [default: 20, 50 with --verbose].",
)  # fmt: skip
@pass_env
def debug(env: CliEnv, agent_id: str, verbose: bool, events: int | None) -> None:
    """Show AGENT's record, heartbeat, pending work, last events, log tail and restarts."""
    result = env.call(lambda c: c.agent_debug(agent_id, env.swarm, verbose=verbose, events=events))
    env.emit(result, lambda: text(result))


def text(r: AgentDebugResult) -> str:
    a = r.agent
    hb = "-" if a.heartbeat_age_ms is None else f"{a.heartbeat_age_ms} ms ago"
    pairs: list[tuple[str, object]] = [
        ("agent", f"{a.id} ({a.type}, {a.role}) in swarm {a.swarm}"),
        ("status", f"{a.status} (desired: {r.desired or '-'})"),
        ("heartbeat", hb),
        ("host", f"{a.host or '-'} pid {a.pid if a.pid is not None else '-'}"
                 f"{'' if a.local else ' (remote)'}"
                 f"{' supervised by this cfnd' if r.supervised_here else ''}"),
        ("current task", a.current_task or "-"),
        ("tasks", f"{a.tasks_done} done, {a.tasks_failed} failed"),
        ("pending work", f"{r.work_total} {'entry' if r.work_total == 1 else 'entries'}"
                         if r.work_total else "none"),
    ]  # fmt: skip
    for w in r.work:
        state = f"delivered {w.deliveries}x, idle {w.idle_ms} ms" if w.delivered else "not read"
        pairs.append(("  " + w.task, f"{w.entry_id} {state}"))
    rs = r.restart
    pairs += [
        ("restarts", rs.restarts),
        ("replaces", rs.replaces or "-"),
        ("replaced by", rs.replaced_by or "-"),
        ("replacement", "pending in "
         f"{rs.replacement_due_in_s:.1f} s" if rs.pending_replacement
         and rs.replacement_due_in_s is not None else "none pending"),
        ("restart budget", f"{rs.starts_last_minute}/{rs.max_per_minute} in the last minute, "
         f"backoff {rs.backoff_s:g}..{rs.backoff_max_s:g} s"),
    ]  # fmt: skip
    for ex in rs.exits:
        code = "" if ex.exit_code is None else f" (exit code {ex.exit_code})"
        pairs.append(("  " + render.format_time(ex.ts_ms), f"{ex.status}: {ex.reason}{code}"))
    out = render.fields(pairs)
    if r.record:
        out += "\n\nrecord:\n" + json.dumps(r.record, indent=2, sort_keys=True)
    out += f"\n\nlast {len(r.events)} events:\n"
    out += (
        "\n".join(
            f"  {render.format_time(e.ts_ms)} {e.type} {json.dumps(e.data, sort_keys=True)}"
            for e in r.events
        )
        or "  none"
    )
    if r.log_path:
        cut = " (tail)" if r.log_truncated else ""
        out += f"\n\nlog {r.log_path} ({r.log_bytes} bytes){cut}:\n{r.log_tail.rstrip()}"
    else:
        out += "\n\nlog: none here (a remote agent, or one of another host)"
    return out
