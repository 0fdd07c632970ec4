"""The tree's promises: the generated sync client is fresh, no import cycles, small files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from cfn_client.api import generate

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 600


def test_sync_client_is_generated_from_the_async_one() -> None:
    """``api/sync.py`` is exactly what unasync makes of ``api/async_.py``."""
    expected = generate.render()
    actual = generate.TARGET.read_text(encoding="utf-8")
    assert actual == expected, "api/sync.py is stale: run `python -m cfn_client.api.generate`"
    for source, target in generate.EXTRA:  # the ops split out of async_.py
        assert target.read_text(encoding="utf-8") == generate.render(source), f"{target} is stale"


def test_the_generator_check_fails_on_a_stale_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "sync.py"
    stale.write_text(generate.TARGET.read_text(encoding="utf-8").replace("def ping", "def pong"))
    monkeypatch.setattr(generate, "TARGET", stale)
    assert generate.main(["--check"]) == 1
    monkeypatch.setattr(generate, "TARGET", tmp_path / "fresh.py")
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0


def test_sync_and_async_clients_have_the_same_ops() -> None:
    from cfn_client.api import AsyncClient, Client

    def ops(cls: type) -> set[str]:
        return {n for n in vars(cls) if not n.startswith("_")}

    assert ops(Client) == ops(AsyncClient)
    assert len(ops(Client)) > 40


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("cfn_client", "cfn_daemon")
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module):
                cycles.append(f"{module} -> {imported}")
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_source_file_over_600_lines() -> None:
    sources = [*ROOT.glob("cfn_client/**/*.py"), *ROOT.glob("cfn_daemon/**/*.py")]
    big = {
        str(p.relative_to(ROOT)): n
        for p in sources
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"split these modules (over {MAX_LINES} lines): {big}"


def test_import_contracts_hold() -> None:
    """The layering contracts in pyproject.toml (also run by .ci/run as `lint-imports`)."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
