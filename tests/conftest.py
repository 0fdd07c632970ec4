"""Shared fixtures. Every test gets its own key prefix; nothing flushes Redis."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cfn_daemon.app import Daemon
from cfn_daemon.settings.runtime import ConfigManager
from tests.cli_support import shared_cfnd
from tests.daemon_proc import CfndProcess
from tests.redis_servers import redis_factory, tls_files

# fixtures shared with every test module
__all__ = ["redis_factory", "shared_cfnd", "tls_files"]

# scripts/test exports this (127.0.0.1:6379 when it answers, else a private server).
SHARED_REDIS = os.environ.get("CFN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session", autouse=True)
def context_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """cfnctl's current-swarm file, private to the session: tests never touch the real
    ~/.config (and cfnctl processes the tests start inherit it)."""
    path = tmp_path_factory.mktemp("cfnctx") / "context.json"
    saved = os.environ.get("CFN_CONTEXT_FILE")
    os.environ["CFN_CONTEXT_FILE"] = str(path)
    try:
        yield path
    finally:
        if saved is None:
            os.environ.pop("CFN_CONTEXT_FILE", None)
        else:
            os.environ["CFN_CONTEXT_FILE"] = saved


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses."""
    return f"cfntest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temp dir: Unix socket paths must stay under ~108 bytes."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="cfn-", dir="/tmp"))
    yield path
    if not os.environ.get("CFN_KEEP_TEST_TMP"):  # keep agent logs when debugging
        shutil.rmtree(path, ignore_errors=True)


DaemonFactory = Callable[..., Awaitable[Daemon]]


@pytest.fixture
async def daemon_factory(short_tmp: Path, key_prefix: str) -> AsyncIterator[DaemonFactory]:
    """Start in-process daemons; each is stopped (and must stop cleanly) at teardown."""
    running: list[tuple[Daemon, asyncio.Task[None]]] = []
    counter = 0

    async def start(
        *, redis_url: str | None = SHARED_REDIS, config_text: str | None = None, **flags: Any
    ) -> Daemon:
        nonlocal counter
        counter += 1
        base = short_tmp / f"d{counter}"
        config_file = None
        if config_text is not None:
            base.mkdir(parents=True, exist_ok=True)
            config_file = base / "cfnd.toml"
            config_file.write_text(config_text)
        all_flags = {
            "daemon.socket": str(base / "cfnd.sock"),
            "daemon.state_dir": str(base / "state"),
            "redis.url": redis_url,
            "redis.key_prefix": key_prefix,
            **flags,
        }
        manager = ConfigManager(file=config_file, env={}, flags=all_flags)
        daemon = Daemon(manager, env={})
        await daemon.__aenter__()
        task = asyncio.create_task(daemon.run(), name=f"daemon-{counter}")
        running.append((daemon, task))
        ready = asyncio.create_task(daemon.ready.wait())
        done, _ = await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            ready.cancel()
            task.result()
        return daemon

    yield start
    for daemon, task in reversed(running):
        daemon.request_stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), 30)
        except TimeoutError:
            # Say what is stuck: a hang at shutdown is a bug worth a clear report.
            stuck = [
                f"{t.get_name()}: {t.get_stack(limit=3)}"
                for t in asyncio.all_tasks()
                if not t.done()
            ]
            task.cancel()
            raise AssertionError(
                "daemon did not stop in 30 s; running:\n" + "\n".join(stuck)
            ) from None
        finally:
            await daemon.__aexit__(None, None, None)


@pytest.fixture
async def daemon(daemon_factory: DaemonFactory) -> Daemon:
    """One running in-process daemon on the shared Redis with a private key prefix."""
    return await daemon_factory()


@pytest.fixture
def cfnd_factory(short_tmp: Path, key_prefix: str) -> Iterator[Callable[..., CfndProcess]]:
    """Start real ``cfnd`` processes; killed at teardown if a test left them running."""
    procs: list[CfndProcess] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        name: str | None = None,
    ) -> CfndProcess:
        proc = CfndProcess(
            short_tmp / (name or f"p{len(procs)}"),
            list(args),
            {"CFN_KEY_PREFIX": key_prefix, **(env or {})},
        )
        procs.append(proc)
        return proc.start(wait_ready=wait_ready)

    yield start
    for proc in procs:
        proc.close()


@pytest.fixture
def cfnd(cfnd_factory: Callable[..., CfndProcess]) -> CfndProcess:
    """A real cfnd process on the shared Redis (127.0.0.1:6379) with a private prefix."""
    return cfnd_factory("--redis-url", SHARED_REDIS)
