"""Generate ``api/sync.py`` (the blocking ``Client``) from ``api/async_.py`` with unasync
(and ``api/sync_admin.py``, the admin ops it inherits, from ``api/async_admin.py``;
``api/sync_batch.py`` from ``api/async_batch.py``).

    python -m cfn_client.api.generate          # rewrite sync.py
    python -m cfn_client.api.generate --check  # exit 1 if sync.py is stale

unasync drops ``async``/``await`` and renames ``Async*`` names; the replacements
below map the async transport's names onto the blocking ones. It is a development
tool (``pip install -e '.[test]'``), never imported at run time.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYPROJECT = HERE.parent.parent / "pyproject.toml"
SOURCE = HERE / "async_.py"
TARGET = HERE / "sync.py"
# Further (source, target) pairs: ops split out of async_.py to keep it small.
EXTRA = (
    (HERE / "async_admin.py", HERE / "sync_admin.py"),
    (HERE / "async_batch.py", HERE / "sync_batch.py"),
)

REPLACEMENTS = {
    "AsyncClient": "Client",
    "AsyncEventFollow": "EventFollow",
    "async_transport": "sync_transport",
    "AsyncAdminOps": "AdminOps",
    "async_admin": "sync_admin",
    "AsyncBatchOps": "BatchOps",
    "async_batch": "sync_batch",
}
BANNER = (
    "# GENERATED from cfn_client/api/{source} by `python -m cfn_client.api.generate`:\n"
    "# do not edit by hand (a test fails when this file is stale).\n"
)
DOCSTRING = '"""The blocking client: every op of cfnd as a method, results as typed Structs."""\n'
DOCSTRINGS = {
    "async_admin.py": '"""The blocking client\'s admin ops (``Client`` inherits them)."""\n',
    "async_batch.py": '"""The blocking client\'s batched submit (``Client`` inherits it)."""\n',
}


def render(source: Path = SOURCE) -> str:
    """The text the blocking twin of ``source`` (default: ``sync.py``) must have."""
    import unasync

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "async_.py"
        src.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
        rule = unasync.Rule("async_.py", "sync.py", additional_replacements=REPLACEMENTS)
        unasync.unasync_files([str(src)], rules=[rule])
        out = Path(tmp) / "sync.py"
        text = out.read_text(encoding="utf-8")
        # The source's docstring talks about being the source; the copy says what it is.
        end = text.index('"""', 3) + 3
        head = BANNER.format(source=source.name) + DOCSTRINGS.get(source.name, DOCSTRING)
        out.write_text(head + text[end:], encoding="utf-8")
        # Dropping ``await`` changes line lengths and import order: let ruff settle both,
        # with the project's own settings, so the generated file is lint- and format-clean.
        ruff = [sys.executable, "-m", "ruff"]
        cfg = ["--config", str(PYPROJECT)] if PYPROJECT.exists() else []
        subprocess.run(
            [*ruff, "check", "-q", "--fix", "--select", "I,F401", *cfg, str(out)], check=False
        )
        subprocess.run([*ruff, "format", "-q", *cfg, str(out)], check=True)
        return out.read_text(encoding="utf-8")


def main(argv: list[str]) -> int:
    stale = 0
    for source, target in ((SOURCE, TARGET), *EXTRA):
        text = render(source)
        if "--check" in argv:
            current = target.read_text(encoding="utf-8") if target.exists() else ""
            if current != text:
                print(
                    f"{target} is stale: run `python -m cfn_client.api.generate`", file=sys.stderr
                )
                stale = 1
        else:
            target.write_text(text, encoding="utf-8")
    return stale


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
