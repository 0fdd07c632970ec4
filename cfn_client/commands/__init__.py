"""Plumbing shared by every cfnctl command: the CLI environment, calling cfnd, output, errors.

A command parses its arguments, makes one ``env.call``, and hands the result to
``env.emit`` with a renderer. A ``CfnError`` raised anywhere is reported once,
by ``report_error``, from the root group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from cfn_client import render
from cfn_client.api import Client
from cfn_client.errors import CfnError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CliEnv:
    """Global options, stored as the root click context's ``obj``."""

    socket: Path
    json: bool
    timeout_s: float

    def client(self) -> Client:
        """A client for the chosen socket (not yet connected)."""
        return Client(self.socket, timeout_s=self.timeout_s)

    def call(self, fn: Callable[[Client], T]) -> T:
        """Connect, run ``fn`` with the client, close; errors propagate as ``CfnError``."""
        with self.client() as client:
            return fn(client)

    def emit(self, result: Any, human: Callable[[], str]) -> None:
        """Print ``result`` as one JSON document, or ``human()`` for people."""
        text = render.to_json(result) if self.json else human()
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
        click.echo(render.to_json(render.error_document(err)))
    else:
        click.echo(render.error_text(err), err=True)
