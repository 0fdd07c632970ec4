"""``cfnctl config``: show, set, reset and validate cfnd's configuration."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import click
import msgspec

from cfn_client.cli import render
from cfn_client.cli.env import CliEnv, interactive, pass_env
from cfn_client.wire.errors import EXIT_ERROR, CfnError, ConfigError
from cfn_client.wire.schema.system import ConfigValidateResult

__all__ = ["config", "interactive"]  # interactive: re-exported, tests patch it here


@click.group()
def config() -> None:
    """Show, change and validate cfnd's configuration.

    Runtime overrides (`config set`) live in Redis and win over the config file
    and CFN_* variables; only keys of the loop, limits and swarm sections (and
    daemon.log_level) can change while cfnd runs.
    """


@config.command("show")
@click.argument("key", required=False)
@pass_env
def show(env: CliEnv, key: str | None) -> None:
    """Show every effective setting, or only KEY, with where its value comes from."""
    result = env.call(lambda c: c.config_show(key))
    env.emit(result, lambda: render.config_show(result))


@config.command("set")
@click.argument("key")
@click.argument("value")
@pass_env
def set_(env: CliEnv, key: str, value: str) -> None:
    """Set KEY to VALUE as a runtime override (e.g. `loop.gate_threshold 0.8`)."""
    result = env.call(lambda c: c.config_set(key, value))
    env.emit(result, lambda: render.config_set(result))


@config.command("reset")
@click.argument("key", required=False)
@click.option("-y", "--yes", is_flag=True, help="Reset all without asking.")
@pass_env
def reset(env: CliEnv, key: str | None, yes: bool) -> None:
    """Drop the runtime override of KEY, or of every key (asks first unless --yes).

    Without a terminal to ask on (or with --json), resetting every key needs --yes:
    a script must neither hang on a question nor wipe overrides by accident.
    """
    if key is None and not yes:
        if env.json or not interactive():
            raise click.UsageError("resetting every override needs --yes (or name a KEY)")
        click.confirm("Reset every runtime override?", abort=True, err=True)
    result = env.call(lambda c: c.config_reset(key))
    env.emit(result, lambda: render.config_reset(result))


@config.command("validate")
@click.argument(
    "file", type=click.Path(exists=True, dir_okay=False, allow_dash=True), required=False
)
@pass_env
def validate(env: CliEnv, file: str | None) -> None:
    """Validate FILE (cfnd TOML; `-` reads stdin), or with no FILE the daemon's config.

    A FILE is checked here, with cfnd's own loader, whether or not cfnd runs (only
    the file's content counts: no CFN_* variables, no runtime overrides).
    Exits 1 naming the file, key (or line), offending value and what was expected.
    """
    if file is None:
        result = env.call(lambda c: c.config_validate())
    else:
        name = "<stdin>" if file == "-" else file
        try:
            with click.open_file(file, "rb") as stream:
                data = stream.read()
        except OSError as exc:
            raise click.FileError(name, hint=exc.strerror) from None
        text = _read_text(data, name)
        result = validate_offline(text, name) or env.call(lambda c: c.config_validate(text, name))
    env.emit(result, lambda: render.config_validate(result))
    if not result.valid:
        env.exit(EXIT_ERROR)


# A file is validated in a child `python -m cfn_daemon.settings.validate` (same install,
# same interpreter): cfnctl never imports cfn_daemon, and the answer must not depend on
# whether a daemon is up (nor on which daemon, or its version). Always, not only when
# cfnd is unreachable: one code path, the same verdict offline and online.
VALIDATOR = "cfn_daemon.settings.validate"
VALIDATE_TIMEOUT_S = 60.0


def validate_offline(text: str, name: str) -> ConfigValidateResult | None:
    """``text`` checked by cfnd's loader in a child process; None when cfn_daemon is not
    installed here (then cfnd checks it). Raises the loader's ``ConfigError``."""
    if importlib.util.find_spec(VALIDATOR.split(".", 1)[0]) is None:
        return None
    try:
        proc = subprocess.run(
            [sys.executable, "-m", VALIDATOR, "-", "--name", name],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=VALIDATE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CfnError(f"validating {name} took over {VALIDATE_TIMEOUT_S:g}s") from None
    try:
        doc = msgspec.json.decode(proc.stdout)
    except msgspec.DecodeError:
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        raise CfnError(f"the config validator failed (exit {proc.returncode}): {stderr}") from None
    error = doc.get("error")
    if error:
        raise CfnError.from_wire(error["code"], error["message"], error.get("details"))
    return ConfigValidateResult(valid=bool(doc["valid"]), source=str(doc["source"]))


def _read_text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{name}: not UTF-8 text (byte {exc.start}); a cfnd config is UTF-8 TOML",
            details={"file": name},
        ) from None
