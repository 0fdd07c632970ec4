"""``cfn-agent``: the worker a local child or a remote host runs, one swarm, one type.

    CFN_REDIS_PASSWORD=... cfn-agent --redis redis://HOST:6379/0 --swarm ID --type shell

It reads the type's spec that cfnd published (falling back to the built-in one),
registers, and runs tasks until SIGTERM/SIGINT (``AgentRuntime``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import sys
import time
from typing import Any

import click
import structlog

from cfn_client.wire.errors import CfnError, ConfigError
from cfn_daemon.agent import proc
from cfn_daemon.agent import types as agent_types
from cfn_daemon.agent.runtime import AgentRuntime
from cfn_daemon.core.placement import AgentRecord
from cfn_daemon.queue.agents import host_name, new_agent_id
from cfn_daemon.queue.tasks import Retry
from cfn_daemon.settings.schema import RedisConfig, TasksConfig
from cfn_daemon.store.client import (
    build_client,
    describe_error,
    is_credentials_error,
    is_unavailable_error,
)
from cfn_daemon.store.keys import Keys
from cfn_daemon.store.urls import resolve
from cfn_daemon.util.aio import until_stopped
from cfn_daemon.util.logs import configure_logging
from cfn_daemon.util.restart import Fatal
from cfn_daemon.util.signing import Signer

log = structlog.get_logger("cfn.agent")
_TASKS = TasksConfig()


async def load_spec(redis: Any, keys: Keys, agent_type: str) -> agent_types.AgentTypeSpec:
    """The type's spec as published by cfnd, else the built-in one."""
    raw = await redis.hget(keys.agent_types, agent_type)
    if raw:
        return agent_types.decode(raw)
    return agent_types.resolve(agent_type, {})


async def wait_for_spec(
    redis: Any, keys: Keys, agent_type: str, stop: asyncio.Event, give_up_s: float | None
) -> agent_types.AgentTypeSpec | None:
    """The type's spec, retried with capped backoff while Redis is unreachable; None
    when stopped first or (a local agent) after ``give_up_s``."""
    started = time.monotonic()
    delay_s = 0.2
    while True:
        try:
            return await load_spec(redis, keys, agent_type)
        except Exception as exc:
            if is_credentials_error(exc):
                # A wrong password or an unverifiable server: waiting will not fix it.
                raise ConfigError(describe_error(exc)) from None
            if not is_unavailable_error(exc):
                raise
            waited = time.monotonic() - started
            if give_up_s is not None and waited > give_up_s:
                log.error("agent_start_gave_up", error=describe_error(exc), waited_s=waited)
                return None
            log.warning("agent_start_waiting", error=describe_error(exc), retry_in_s=delay_s)
        if not await until_stopped(asyncio.sleep(delay_s), stop):
            return None
        delay_s = min(delay_s * 2, 30.0)


def task_user(name: str) -> tuple[int, int]:
    """The uid and gid of ``name`` (a user name or a numeric uid), else ``ConfigError``."""
    try:
        pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"--run-as {name}: no such user", details={"key": "agents.run_as"}
        ) from None
    return pw.pw_uid, pw.pw_gid


async def amain(opts: dict[str, Any]) -> int:
    env = dict(os.environ)
    # No task of ours (same uid) may read our environment or memory through /proc.
    proc.protect_self()
    signer = Signer()
    if opts.get("key_fd") is not None:
        # cfnd pins this key for our votes: it never travels through Redis to it.
        with contextlib.suppress(OSError):
            os.write(opts["key_fd"], signer.public.encode() + b"\n")
        with contextlib.suppress(OSError):
            os.close(opts["key_fd"])
    if opts.get("run_as"):
        proc.RUN_AS = task_user(opts["run_as"])
    cfg = RedisConfig(
        url=opts["redis"],
        key_prefix=opts["key_prefix"],
        tls_ca_file=opts["tls_ca_file"],
        tls_cert_file=opts["tls_cert_file"],
        tls_key_file=opts["tls_key_file"],
    )
    params = resolve(cfg, env)
    redis = build_client(params, cfg, pool_size=8, health_check=False)
    keys = Keys(opts["key_prefix"])
    stop = asyncio.Event()
    main_task = asyncio.current_task()
    assert main_task is not None

    def on_signal() -> None:
        # The first SIGTERM drains (bounded); a second one ends us at once.
        if stop.is_set():
            log.warning("agent_second_signal")
            main_task.cancel()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    orphan_after_s = opts["orphan_after_s"] if opts["local"] else None
    try:
        spec = await wait_for_spec(redis, keys, opts["type"], stop, orphan_after_s)
        if spec is None:
            return 0
        record = AgentRecord(
            id=opts["id"] or new_agent_id(opts["type"]),
            swarm=opts["swarm"],
            type=opts["type"],
            role=opts["role"] or spec.role,
            status="starting",
            capabilities=list(opts["capability"]) or spec.capabilities,
            host=host_name(),
            pid=os.getpid(),
            local=opts["local"],
            concurrency=opts["concurrency"] or spec.concurrency,
        )
        runtime = AgentRuntime(
            redis,
            keys,
            record,
            spec,
            heartbeat_interval_s=opts["heartbeat_s"],
            stop_grace_s=opts["grace_s"],
            retry=Retry(base_s=opts["retry_base_s"], max_s=opts["retry_max_s"]),
            orphan_after_s=orphan_after_s,
            parent_pid=opts.get("parent_pid"),
            signer=signer,
        )
        runtime.stop = stop
        # Read by now: no child of ours inherits them (executors scrub their env too).
        for name in ("CFN_REDIS_PASSWORD", "CFN_AGENT_TOKEN", "REDISCLI_AUTH"):
            os.environ.pop(name, None)
        await runtime.run()
    except Fatal as exc:  # e.g. the swarm is full
        click.echo(f"cfn-agent: {exc}", err=True)
        log.error("agent_fatal", error=str(exc))
        return 2
    except ConfigError:
        raise  # exit 78: restarting with the same settings cannot help
    except CfnError as exc:
        click.echo(f"cfn-agent: {exc.message}", err=True)
        return 2
    finally:
        await redis.aclose()
    return 0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--redis",
    envvar="CFN_REDIS_URL",
    required=True,
    metavar="URL",
    help="Redis URL without password (env CFN_REDIS_URL; password: CFN_REDIS_PASSWORD)",
)
@click.option(
    "--tls-ca-file",
    envvar="CFN_REDIS_TLS_CA_FILE",
    default=None,
    help="CA bundle that signed the rediss:// server's certificate (cfnd: redis.tls_ca_file)",
)
@click.option(
    "--tls-cert-file",
    envvar="CFN_REDIS_TLS_CERT_FILE",
    default=None,
    help="Client certificate for a Redis with tls-auth-clients (cfnd: redis.tls_cert_file)",
)
@click.option(
    "--tls-key-file",
    envvar="CFN_REDIS_TLS_KEY_FILE",
    default=None,
    help="Private key of --tls-cert-file (cfnd: redis.tls_key_file)",
)
@click.option("--swarm", envvar="CFN_SWARM", required=True, help="Swarm to join (env CFN_SWARM)")
@click.option("--type", "type_", required=True, help="Agent type (built-in or [agent_types])")
@click.option("--id", "agent_id", default=None, help="Agent id (default: TYPE-<random>)")
@click.option("--role", type=click.Choice(["implementer", "validator", "coordinator", "owner"]))
@click.option("--capability", multiple=True, help="Capability tag (repeatable)")
@click.option("--concurrency", type=click.IntRange(1, 64), default=None)
@click.option("--key-prefix", envvar="CFN_KEY_PREFIX", default="cfn", show_default=True)
@click.option("--heartbeat-s", type=click.FloatRange(0.05, 60), default=1.0, show_default=True)
@click.option("--grace-s", type=click.FloatRange(0, 3600), default=10.0, show_default=True)
@click.option(
    "--retry-base-s",
    type=click.FloatRange(0.001, 86_400),
    default=_TASKS.retry_base_s,
    show_default=True,
    help="A failed task is retried after base * 2^(attempt-1) s (cfnd: tasks.retry_base_s)",
)
@click.option(
    "--retry-max-s",
    type=click.FloatRange(0.001, 86_400),
    default=_TASKS.retry_max_s,
    show_default=True,
    help="... at most this long (cfnd passes tasks.retry_max_s to its local agents)",
)
@click.option("--local", is_flag=True, hidden=True, help="Spawned by cfnd (supervised).")
@click.option(
    "--orphan-after-s",
    type=click.FloatRange(0.1, 86_400),
    default=120.0,
    hidden=True,
    help="A local agent whose cfnd is gone this long exits (cfnd passes agents.orphan_after_s).",
)
@click.option(
    "--parent-pid",
    type=click.IntRange(min=1),
    default=None,
    hidden=True,
    help="The supervising cfnd's pid (a cfnd killed before we started is no parent).",
)
@click.option("--key-fd", type=int, default=None, hidden=True, help="Hand cfnd our public key.")
@click.option(
    "--run-as",
    default=None,
    metavar="USER",
    help="Run tasks as this user (when started as root; cfnd passes [agents] run_as).",
)
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default="auto")
@click.option("--log-file", hidden=True, help="stderr's file, to rotate by size (cfnd sets it).")
@click.option("--log-max-bytes", type=click.IntRange(min=0), default=0, hidden=True)
def main(**opts: Any) -> None:
    """cfn-agent — run tasks of one swarm from Redis (a local or remote worker)."""
    if "@" in opts["redis"] and ":" in opts["redis"].split("@", 1)[0].split("//", 1)[-1]:
        raise click.UsageError("--redis must not contain a password; use CFN_REDIS_PASSWORD")
    opts["type"] = opts.pop("type_")
    opts["id"] = opts.pop("agent_id")
    configure_logging(opts["log_format"], "info", opts.pop("log_file"), opts.pop("log_max_bytes"))
    started = time.monotonic()
    try:
        rc = asyncio.run(amain(opts))
    except ConfigError as exc:
        click.echo(f"cfn-agent: {exc.message}", err=True)
        rc = 78
    except asyncio.CancelledError:  # a second SIGTERM/SIGINT: stopped without draining
        rc = 143
    log.info("agent_exit", code=rc, ran_s=round(time.monotonic() - started, 1))
    sys.exit(rc)


if __name__ == "__main__":
    main()
