"""Chaos fixtures: the run's size, a persistent private Redis, a cfnd on it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.harness import Scale
from tests.daemon_proc import CfndProcess
from tests.redis_servers import RedisFactory, RedisProcess

ROOT = Path(__file__).resolve().parents[2]
# Fast beats and lapses; a replacement budget that keeps up with one kill every 2 s.
CHAOS_ENV = {
    "CFN_AGENTS__HEARTBEAT_INTERVAL_S": "0.25",
    "CFN_AGENTS__LAPSE_S": "2",
    "CFN_AGENTS__RESTART_BACKOFF_S": "0.1",
    "CFN_AGENTS__MAX_RESTARTS_PER_MINUTE": "60",
    "CFN_AGENTS__STOP_GRACE_S": "2",
    "CFN_REDIS__COMMAND_TIMEOUT_S": "2",
    "CFN_REDIS__HEALTH_INTERVAL_S": "0.25",
    "CFN_REDIS__RETRY_MAX_S": "0.5",
    "PYTHONPATH": str(ROOT),  # python-kind agents import tests.chaos.agents
}
PERSISTENT = ["appendonly yes", "appendfsync always"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.timeout(900 if Scale.from_env().long else 240))


@pytest.fixture
def scale() -> Scale:
    return Scale.from_env()


@pytest.fixture
def chaos_redis(redis_factory: RedisFactory) -> RedisProcess:
    """A private redis-server that keeps its data across restarts and crashes."""
    return redis_factory(extra_conf=PERSISTENT)


@pytest.fixture
def chaos_cfnd(
    cfnd_factory: Callable[..., CfndProcess], chaos_redis: RedisProcess
) -> Callable[..., CfndProcess]:
    def start(*args: str, env: dict[str, str] | None = None) -> CfndProcess:
        return cfnd_factory("--redis-url", chaos_redis.url, *args, env={**CHAOS_ENV, **(env or {})})

    return start
