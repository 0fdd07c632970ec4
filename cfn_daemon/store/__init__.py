"""cfnd's Redis store: connection URLs, the embedded ``redis-server`` and ``Store``."""

from cfn_daemon.store.embedded import EmbeddedRedis, EmbeddedStartError
from cfn_daemon.store.store import Store

__all__ = ["EmbeddedRedis", "EmbeddedStartError", "Store"]
