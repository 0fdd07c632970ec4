"""Output for humans (aligned text, no extra dependencies) and for scripts (``--json``).

Every function returns a string; the CLI decides where it goes. ``--json`` prints
one JSON document per command, and one JSON line per event when streaming. One
module per noun; this package re-exports them so commands write ``render.status(...)``.
CFN-loop views are in ``render.loop``, the full-screen monitor in ``render.monitor``.

The re-exports load on first use (``render.status``): a command that imports one module
(``from cfn_client.cli.render import system``) does not pay for the others.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cfn_client.cli.render.common import *  # noqa: F403
    from cfn_client.cli.render.events import *  # noqa: F403
    from cfn_client.cli.render.swarm import *  # noqa: F403
    from cfn_client.cli.render.system import *  # noqa: F403
    from cfn_client.cli.render.task import *  # noqa: F403

#: The modules re-exported here, in order (a later one's name wins, as with ``import *``).
REEXPORTED = ("common", "events", "swarm", "system", "task")
_loaded = False


def _load() -> None:
    """``from cfn_client.cli.render.<each> import *``, once."""
    global _loaded
    for part in REEXPORTED:
        module = importlib.import_module(f"{__name__}.{part}")
        names = getattr(module, "__all__", None) or [n for n in vars(module) if n[0] != "_"]
        globals().update({n: getattr(module, n) for n in names})
    _loaded = True


def __getattr__(name: str) -> Any:
    # Private names were never re-exported; a submodule (render.loop) is the import
    # system's to load, not a reason to load every re-exported one.
    if _loaded or name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _load()
    try:
        return globals()[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
