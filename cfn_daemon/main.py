"""``cfnd`` entry point: parse flags, load config, pick the event loop, handle signals.

Exit status: 0 after a clean stop, 1 when the daemon failed at runtime or could
not start (socket or state dir in use, Redis server failed to start), 2 for a
command-line usage error, 78 (EX_CONFIG) for an invalid configuration.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import click
import structlog

from cfn_client import __version__
from cfn_client.wire.errors import CfnError, ConfigError
from cfn_daemon.app import Daemon
from cfn_daemon.settings.load import find_config_file
from cfn_daemon.settings.runtime import ConfigManager
from cfn_daemon.util import memory
from cfn_daemon.util.aio import run_loop
from cfn_daemon.util.logs import configure_logging
from cfn_daemon.util.sdnotify import Notifier

EX_CONFIG = 78
log = structlog.get_logger("cfn.main")


async def serve(manager: ConfigManager) -> int:
    """Run cfnd until SIGTERM/SIGINT; SIGHUP reloads the config."""
    loop = asyncio.get_running_loop()
    try:
        async with Daemon(manager, notifier=Notifier()) as daemon:
            loop.add_signal_handler(signal.SIGTERM, daemon.request_stop)
            loop.add_signal_handler(signal.SIGINT, daemon.request_stop)
            loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
            await daemon.run()
    except CfnError as exc:
        log.error("cfnd_failed", code=exc.instance_code, error=exc.message)
        click.echo(f"cfnd: {exc.message}", err=True)
        return EX_CONFIG if isinstance(exc, ConfigError) else 1
    return 0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    help="TOML config (default: $CFN_CONFIG, ~/.config/cfn/cfnd.toml, /etc/cfn/cfnd.toml)",
)
@click.option("--socket", metavar="PATH", help="Unix socket to serve (env CFN_SOCKET)")
@click.option("--state-dir", metavar="DIR", help="State directory (env CFN_STATE_DIR)")
@click.option(
    "--redis-url",
    metavar="URL",
    help="Redis URL without password (env CFN_REDIS_URL); default: embedded Redis",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    help="auto: console on a TTY, JSON otherwise",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.version_option(__version__, prog_name="cfnd")
def main(
    config_file: str | None,
    socket: str | None,
    state_dir: str | None,
    redis_url: str | None,
    log_format: str | None,
    log_level: str | None,
) -> None:
    """cfnd — the cfn coordination daemon.

    Serves cfnctl and scripts on a Unix socket and keeps all state in Redis.
    With no Redis configured it runs a private redis-server in its state dir.
    Exit status: 0 clean stop, 1 runtime failure, 2 usage, 78 invalid config.
    """
    if redis_url and re.search(r"://[^/@]*:[^/@]+@", redis_url):
        raise click.UsageError(
            "--redis-url must not contain a password (it would show in `ps`); "
            "use CFN_REDIS_PASSWORD, [redis] password_file, or CFN_REDIS_URL"
        )
    flags = {
        "daemon.socket": socket,
        "daemon.state_dir": state_dir,
        "redis.url": redis_url,
        "daemon.log_format": log_format,
        "daemon.log_level": log_level,
    }
    try:
        file = find_config_file(config_file, os.environ)
        manager = ConfigManager(file=file, env=os.environ, flags=flags)
    except ConfigError as exc:
        click.echo(f"cfnd: invalid configuration: {exc.message}", err=True)
        sys.exit(EX_CONFIG)
    except OSError as exc:
        click.echo(f"cfnd: cannot read configuration: {exc}", err=True)
        sys.exit(EX_CONFIG)
    daemon_cfg = manager.config.daemon
    configure_logging(daemon_cfg.log_format, daemon_cfg.log_level)
    memory.use_mmap_for_large_buffers()  # freed frame buffers go back to the OS
    sys.exit(run_loop(serve(manager)))


if __name__ == "__main__":
    main()
