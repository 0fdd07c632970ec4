"""``cfnctl completion``: the scripts load in the shells, and ids complete from a real
cfnd — swarms, agents, runs — or quietly and quickly not at all when cfnd is away."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from cfn_client.cli.main import cfnctl
from tests.cli_support import Swarm, swarm, wait_agents
from tests.daemon_proc import CFNCTL

__all__ = ["swarm"]  # fixture, imported for pytest

# Parameters that name something cfnd knows: each must complete from it.
ID_PARAMS = {"swarm_id", "agent_id", "from_agent", "to_agent", "run_id", "task_id", "task_ids",
             "epic_id"}  # fmt: skip
# A <Tab> answered within this (0.5 s for cfnd plus starting Python on a loaded machine).
QUICK_S = 5.0


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CFN_", "_CFNCTL", "COMP_"))}
    return {**env, **extra}


def bash(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=clean_env(**env),
        timeout=60, check=False,
    )  # fmt: skip


def complete(*words: str) -> tuple[list[str], str, float]:
    """What click's bash completion offers for the last of ``words`` (values, stderr, seconds)."""
    env = clean_env(
        _CFNCTL_COMPLETE="bash_complete",
        COMP_WORDS=" ".join(["cfnctl", *words]),
        COMP_CWORD=str(len(words)),
    )
    began = time.monotonic()
    out = subprocess.run(CFNCTL, capture_output=True, text=True, env=env, timeout=60, check=False)
    took = time.monotonic() - began
    assert out.returncode == 0, out.stderr
    values = [line.split(",", 1)[1] for line in out.stdout.splitlines() if "," in line]
    return values, out.stderr, took


def test_scripts_load_in_their_shells() -> None:
    for shell in ("bash", "zsh", "fish"):
        out = subprocess.run(
            [*CFNCTL, "completion", shell], capture_output=True, text=True, timeout=60,
            check=False, env=clean_env(),
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "_CFNCTL_COMPLETE" in out.stdout, shell
        if shell == "bash" or shutil.which(shell):
            checked = subprocess.run(
                [shell, "-n"], input=out.stdout, capture_output=True, text=True, timeout=60,
                check=False,
            )  # fmt: skip
            assert checked.returncode == 0, (shell, checked.stderr)
    loaded = bash(f"source <({CFNCTL[0]} completion bash) && complete -p cfnctl")
    assert loaded.returncode == 0, loaded.stderr
    assert "_cfnctl_completion" in loaded.stdout
    assert loaded.stdout.rstrip().endswith(" cfnctl")


def test_an_unknown_shell_is_a_usage_error() -> None:
    out = subprocess.run(
        [*CFNCTL, "completion", "tcsh"], capture_output=True, text=True, timeout=60,
        check=False, env=clean_env(),
    )  # fmt: skip
    assert out.returncode == 2
    assert "bash" in out.stderr and "Traceback" not in out.stderr


def test_every_id_parameter_completes_from_cfnd() -> None:
    missing: list[str] = []

    def walk(cmd: click.Command, path: str) -> None:
        for param in cmd.params:
            if param.name in ID_PARAMS and param._custom_shell_complete is None:
                missing.append(f"{path} {param.name}")
        if isinstance(cmd, click.Group):  # get_command: the root imports its commands on demand
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                walk(sub, f"{path} {name}")

    walk(cfnctl, "cfnctl")
    assert not missing, missing


def test_swarm_ids_complete_through_the_sourced_bash_script(swarm: Swarm) -> None:
    # As a shell does it: the loaded function, COMP_WORDS and COMP_CWORD, then COMPREPLY.
    script = (
        f"source <({CFNCTL[0]} completion bash)\n"
        f'COMP_WORDS=(cfnctl --socket {swarm.socket} swarm status "{swarm.name[:6]}")\n'
        f"COMP_CWORD=5\n_cfnctl_completion {CFNCTL[0]}\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = bash(script)
    assert out.returncode == 0, out.stderr
    assert swarm.name in out.stdout.split(), out.stdout
    assert not out.stderr
    # --swarm ID as well, anywhere a swarm is named.
    values, _, _ = complete("--socket", str(swarm.socket), "--swarm", swarm.name[:6])
    assert swarm.name in values


def test_agent_and_run_ids_complete_from_cfnd(swarm: Swarm) -> None:
    code, _, err = swarm.cli("agent", "create", "shell")
    assert code == 0, err
    with swarm.client(timeout_s=60) as cfn:
        (agent,) = wait_agents(cfn, swarm.name, 1)
    sock = str(swarm.socket)
    values, _, _ = complete("--socket", sock, "--swarm", swarm.name, "agent", "status", "")
    assert values == [agent.id]
    code, run_id, err = swarm.cli(
        "loop", "start", "complete me", "--implementers", "impl", "--validators", "check",
        "--owner", "po", "--detach",
    )  # fmt: skip
    assert code == 0, err
    run_id = run_id.strip()
    try:
        values, _, _ = complete("--socket", sock, "--swarm", swarm.name, "loop", "status", "")
        assert run_id in values
        values, _, _ = complete("--socket", sock, "--swarm", swarm.name, "loop", "status", "zzz")
        assert values == []  # only what starts with the word typed
    finally:
        swarm.cli("loop", "cancel", run_id)


@pytest.fixture
def mute_socket(short_tmp: Path) -> Iterator[Path]:
    """A Unix socket that accepts connections and never answers (a hung cfnd)."""
    path = short_tmp / "mute.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(16)
        yield path


def test_nothing_quickly_and_quietly_when_cfnd_is_down_or_hung(
    short_tmp: Path, mute_socket: Path
) -> None:
    for sock in (short_tmp / "absent.sock", mute_socket):
        for words in (["swarm", "status", ""], ["--swarm", ""], ["loop", "status", ""]):
            values, err, took = complete("--socket", str(sock), *words)
            assert values == [], (sock, words)
            assert err == "", err
            assert took < QUICK_S, (sock, words, took)
    # Commands still complete without cfnd: completion is not all-or-nothing.
    values, _, _ = complete("--socket", str(short_tmp / "absent.sock"), "compl")
    assert values == ["completion"]
