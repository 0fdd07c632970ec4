"""docs/OPERATIONS.md names only cfnctl commands, options and config keys that exist,
and the deploy files it points at."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from cfn_client.cli.main import cfnctl
from cfn_daemon.settings.schema import Config

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "OPERATIONS.md").read_text()


def test_every_cfnctl_command_in_operations_md_exists() -> None:
    commands = set(re.findall(r"`cfnctl ([a-z][a-z -]*?)(?: [A-Z]|[ ]?--|`| [0-9])", DOC))
    assert len(commands) > 15
    runner = CliRunner()
    for cmd in sorted(commands):
        words = [w for w in cmd.split() if w not in ("mesh",)]
        res = runner.invoke(cfnctl, [*words, "--help"])
        assert res.exit_code == 0, f"cfnctl {cmd}: {res.output}"
    for option in re.findall(r"`cfnctl ([a-z ]+?) (--[a-z-]+)", DOC):
        res = runner.invoke(cfnctl, [*option[0].split(), "--help"])
        assert option[1] in res.output, option


def test_config_keys_and_files_in_operations_md_exist() -> None:
    cfg = Config()
    # (`redis.eviction` check: a doctor check, not a key)
    for section, key in re.findall(
        r"`(limits|agents|tasks|redis)\.([a-z_]+)(?![a-z_]*` check)", DOC
    ):
        assert hasattr(getattr(cfg, section), key), f"{section}.{key}"
    for path in re.findall(r"`((?:deploy|scripts)/[^` ]+)`", DOC):
        assert (ROOT / path).exists(), path
