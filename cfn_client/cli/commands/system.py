"""Daemon-level commands: status, ping, doctor (and its alias ``test redis-connection``)."""

from __future__ import annotations

import time

import click
import msgspec

from cfn_client.api.sync import Client
from cfn_client.cli.env import CliEnv, pass_env
from cfn_client.cli.render import system as view
from cfn_client.conn.diagnose import socket_checks
from cfn_client.wire.errors import EXIT_ERROR, CfnError
from cfn_client.wire.schema.system import Check, DoctorResult, PingResult


@click.command()
@click.option("-v", "--verbose", is_flag=True, help="Also show server counters and persistence.")
@pass_env
def status(env: CliEnv, verbose: bool) -> None:
    """Show the daemon, its Redis store and swarm counts.

    Exits 1 (after printing the status) when Redis is unavailable.
    """
    result = env.call(lambda c: c.status(verbose=verbose))
    env.emit(result, lambda: view.status(result, verbose))
    if not result.store.available:
        env.warn(view.store_unavailable_hint(result))
        env.exit(EXIT_ERROR)


@click.command()
@pass_env
def ping(env: CliEnv) -> None:
    """Measure the round trip to cfnd (connection setup excluded)."""

    def timed(client: Client) -> tuple[PingResult, float]:
        start = time.perf_counter()
        result = client.ping()
        return result, (time.perf_counter() - start) * 1000

    result, rtt_ms = env.call(timed)
    document = {**msgspec.structs.asdict(result), "rtt_ms": round(rtt_ms, 3)}
    env.emit(document, lambda: view.ping(result, rtt_ms))


@click.command()
@pass_env
def doctor(env: CliEnv) -> None:
    """Check the socket, the connection, then the daemon's own checks (Redis etc.).

    Exits 1 if a check fails, 3 if cfnd is unreachable, 4 if access is denied.
    """
    run_doctor(env)


@click.group(name="test")
def test_group() -> None:
    """Connectivity tests."""


@test_group.command("redis-connection")
@pass_env
def redis_connection(env: CliEnv) -> None:
    """Check that cfnd runs and reaches Redis (same as `cfnctl doctor`)."""
    run_doctor(env)


def run_doctor(env: CliEnv) -> None:
    """Local socket checks first, then the daemon's; print all, exit by the worst failure."""
    checks, failure = socket_checks(env.socket)
    if failure is None:
        stage = "daemon.connect"
        try:
            with env.client() as client:
                hello = client.hello()
                detail = (
                    f"cfnd {hello.server_version}, pid {hello.pid}, protocol {hello.protocol}; "
                    f"you are {hello.user} (role {hello.role})"
                )
                checks.append(Check(name="daemon.connect", ok=True, detail=detail))
                stage = "daemon.doctor"
                checks += client.doctor().checks
        except CfnError as err:
            failure = err
            fix = str(err.details.get("fix") or "")
            checks.append(Check(name=stage, ok=False, detail=err.message, fix=fix))
    # A failed warning check is advice, not a failure (same rule as the daemon's).
    result = DoctorResult(ok=all(c.ok or c.warning for c in checks), checks=checks)
    env.emit(result, lambda: view.doctor(result))
    if failure is not None:
        env.exit(failure.exit_code)
    if not result.ok:
        env.exit(EXIT_ERROR)
