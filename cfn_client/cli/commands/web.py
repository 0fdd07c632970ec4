"""``cfnctl web``: a one-time login link of cfnd's web console."""

from __future__ import annotations

import click

from cfn_client.cli.env import CliEnv, pass_env


@click.command()
@click.option("--open", "open_browser", is_flag=True, help="Also open the link in a browser.")
@click.option(
    "--role",
    type=click.Choice(["viewer", "operator", "admin"]),
    default=None,
    help="Log the browser in with a lower role than yours (e.g. viewer: look, change nothing).",
)
@pass_env
def web(env: CliEnv, open_browser: bool, role: str | None) -> None:
    """Print a login URL of the web console (needs `[web] enabled = true` in cfnd).

    The link works once, within `[web] token_ttl_s`; the browser session it opens has
    your role (or --role) and lasts `[web] session_ttl_s`.
    """
    result = env.call(lambda c: c.web_login(role=role))
    env.emit(
        result,
        lambda: (
            f"{result.url}\n(one-time link, role {result.role}, "
            f"valid for {result.expires_in_s:.0f} s)"
        ),
    )
    if open_browser:
        import webbrowser

        if not webbrowser.open(result.url):
            env.warn("no browser found; open the link above yourself")
