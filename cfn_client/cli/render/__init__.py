"""Output for humans (aligned text, no extra dependencies) and for scripts (``--json``).

Every function returns a string; the CLI decides where it goes. ``--json`` prints
one JSON document per command, and one JSON line per event when streaming. One
module per noun; this package re-exports them so commands write ``render.status(...)``.
CFN-loop views are in ``render.loop``, the full-screen monitor in ``render.monitor``.
"""

from cfn_client.cli.render.common import *  # noqa: F403
from cfn_client.cli.render.events import *  # noqa: F403
from cfn_client.cli.render.swarm import *  # noqa: F403
from cfn_client.cli.render.system import *  # noqa: F403
from cfn_client.cli.render.task import *  # noqa: F403
