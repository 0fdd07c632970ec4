"""Plumbing shared by every cfnctl command: the CLI environment, calling cfnd, output, errors.

A command parses its arguments, makes one ``env.call``, and hands the result to
``env.emit`` with a renderer. A ``CfnError`` raised anywhere is reported once,
by ``report_error``, from the root group.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, get_args

import click

from cfn_client.cli import context
from cfn_client.cli.render.common import error_document, error_text, to_json
from cfn_client.wire.errors import CfnError

T = TypeVar("T")

if TYPE_CHECKING:
    from cfn_client.api.sync import Client

    # click >= 8.2 types ParamType; older clicks cannot subscript it at run time.
    FloatParam = click.ParamType[float, Any]
    IntParam = click.ParamType[int, Any]
else:
    FloatParam = IntParam = click.ParamType


@dataclass(frozen=True, slots=True)
class CliEnv:
    """Global options, stored as the root click context's ``obj``."""

    socket: Path
    json: bool
    timeout_s: float
    #: ``--swarm``/``$CFN_SWARM``, if given (``swarm`` adds the context file's choice).
    swarm_flag: str | None = None
    #: ``--format``: "table" (for people), "json" (as --json) or "csv" (list-like results).
    format: str = "table"
    # The context's swarm once looked up (one look-up per command).
    _resolved: dict[str, str | None] = field(default_factory=dict)

    @property
    def swarm(self) -> str | None:
        """The swarm to act on: --swarm, $CFN_SWARM, the context's current swarm (if it
        still exists), else None (cfnd picks the only swarm)."""
        if self.swarm_flag is not None:
            return self.swarm_flag
        if "swarm" not in self._resolved:
            self._resolved["swarm"] = self._context_swarm()
        return self._resolved["swarm"]

    def _context_swarm(self) -> str | None:
        chosen = context.current_swarm(self.socket)
        if chosen is None:
            return None
        ids = [s.id for s in self.call(lambda c: c.swarm_list()).swarms]
        if chosen in ids:
            return chosen
        # Destroyed meanwhile (by another user, a TTL): say so, and do as without one.
        fallback = f"using the only swarm, {ids[0]}" if len(ids) == 1 else "no current swarm"
        self.warn(
            f"the current swarm {chosen} (in {context.context_path()}) no longer exists; {fallback}"
        )
        return None

    def client(self) -> Client:
        """A client for the chosen socket (not yet connected)."""
        from cfn_client.api.sync import Client  # imported by the commands that call cfnd

        return Client(self.socket, timeout_s=self.timeout_s)

    def call(self, fn: Callable[[Client], T]) -> T:
        """Connect, run ``fn`` with the client, close; errors propagate as ``CfnError``."""
        with self.client() as client:
            return fn(client)

    def emit(self, result: Any, human: Callable[[], str]) -> None:
        """Print ``result`` as one JSON document, as CSV, or ``human()`` for people."""
        if self.format == "csv" and not self.json:
            from cfn_client.cli.render.csv_out import to_csv

            table = to_csv(result)
            if table is not None:
                click.echo(table, nl=False)
                return
        text = to_json(result) if self.json else human()
        if text:
            click.echo(text)

    def warn(self, message: str) -> None:
        """A note on stderr (never mixed into --json output)."""
        click.echo(f"cfnctl: {message}", err=True)

    def exit(self, code: int) -> NoReturn:
        """Finish with ``code`` after output was already printed."""
        raise click.exceptions.Exit(code)


pass_env = click.make_pass_decorator(CliEnv)


def report_error(err: CfnError, json_mode: bool) -> None:
    """Print ``err``: a JSON error document on stdout with --json, else a line on stderr."""
    if json_mode:
        click.echo(to_json(error_document(err)))
    else:
        click.echo(error_text(err), err=True)


def interactive() -> bool:
    """Whether a person can answer a prompt (stdin is a terminal)."""
    return sys.stdin.isatty()


def confirm_or_require_yes(env: CliEnv, yes: bool, question: str, usage: str) -> None:
    """Ask ``question`` before a sweeping change, unless ``--yes``.

    Without a terminal (or with --json) nobody can answer: that is a usage error
    saying ``usage``, so a script neither hangs nor wipes things by accident.
    """
    if yes:
        return
    if env.json or not interactive():
        raise click.UsageError(usage)
    click.confirm(question, abort=True, err=True)


def choice_of(literal: Any) -> click.Choice[str]:
    """A click.Choice of a ``Literal[...]``'s values, so a typo is a usage error."""
    return click.Choice([str(v) for v in get_args(literal)])


_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float | None:
    """``90s``, ``5m``, ``1h30m``, ``250ms``, ``2d`` in seconds; None if not a duration."""
    text = text.strip().lower()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNITS_S[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


class Duration(FloatParam):
    """Seconds: a plain number, or a duration such as ``90s``, ``5m``, ``1h30m``."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        seconds: float | None
        try:
            seconds = float(value)
        except ValueError:
            seconds = parse_duration(value)
        if seconds is None or not math.isfinite(seconds) or seconds < 0:
            self.fail(f"{value!r} is not a duration (e.g. 30, 90s, 5m, 1h30m)", param, ctx)
        return seconds


class FiniteRange(click.FloatRange):
    """A ``FloatRange`` that refuses nan and inf (which no timeout or threshold means)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


# Epoch milliseconds of 9999-12-31T23:59:59.999Z: later is a typo, not a moment.
MAX_EPOCH_MS = 253_402_300_799_999


class Since(IntParam):
    """A moment as epoch milliseconds: a duration ago (``10m``), a timestamp in ms
    (as events show it), or a local ISO date-time (``2024-05-01T14:00``)."""

    name = "since"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if text.isdigit():
            if int(text) > MAX_EPOCH_MS:
                self.fail(f"{text} is after the year 9999; expected epoch milliseconds", param, ctx)
            return int(text)
        seconds = parse_duration(text)
        if seconds is not None:
            return int((time.time() - seconds) * 1000)
        try:
            return int(datetime.fromisoformat(text).timestamp() * 1000)
        except ValueError:
            self.fail(
                f"{value!r} is neither a duration ago (10m, 1h30m), epoch milliseconds "
                "nor an ISO date-time (2024-05-01T14:00)",
                param,
                ctx,
            )
