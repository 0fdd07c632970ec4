"""Texts and outputs larger than a frame (issue 9, part 7: the reply cap).

cfnd runs with a 64 KiB frame cap here, so "large" stays cheap: outputs of 300 kB
and a 2 MB task text pass through real agents, and every read op still answers.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from cfn_client.api import AsyncClient
from cfn_client.wire.errors import InvalidArgs, NotFound
from cfn_daemon.app import Daemon
from tests.conftest import SHARED_REDIS, DaemonFactory
from tests.test_bounded_state import OUTPUT_10K, seed_swarm, seed_tasks

CFNCTL = str(Path(sys.executable).parent / "cfnctl")
FRAME = 65_536
# A command agent: "out:N" prints N characters (two bytes each) on stdout and a line on
# stderr; any other text is answered with its size in bytes (read from the task JSON).
AGENT = (
    "import json, sys\n"
    "t = json.load(sys.stdin)['text']\n"
    "if t.startswith('out:'):\n"
    "    sys.stdout.write('é' * int(t[4:])); sys.stderr.write('done\\n')\n"
    "else:\n"
    "    print(len(t.encode()))\n"
)
CONFIG = (
    "[agent_types.big]\n"
    'kind = "command"\n'
    f"exec = [{sys.executable!r}, '-c', {AGENT!r}]\n"
    "max_output_bytes = 4194304\n"
)
FAST = {
    "agents.heartbeat_interval_s": 0.2,
    "agents.lapse_s": 3.0,
    "daemon.max_frame_bytes": FRAME,
}


@pytest.fixture
async def d(daemon_factory: DaemonFactory) -> Daemon:
    return await daemon_factory(config_text=CONFIG, **FAST)


@pytest.fixture
async def cfn(d: Daemon) -> AsyncIterator[AsyncClient]:
    ready: asyncio.Future[AsyncClient] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def owner() -> None:
        async with AsyncClient(d.socket_path, timeout_s=60) as client:
            ready.set_result(client)
            await done.wait()

    task = asyncio.create_task(owner())
    yield await ready
    done.set()
    await task


def cfnctl(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CFNCTL, "--socket", str(d.socket_path), *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


async def test_outputs_over_the_frame_cap_stay_readable(d: Daemon, cfn: AsyncClient) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=2, name="big")
    n = 150_000  # 300 kB of output: more than four frames
    ids = [(await cfn.task_submit(f"out:{n}", type="big")).id for _ in range(4)]
    # Before: task.wait, task.list and task.status all failed with frame_too_large.
    waited = await cfn.task_wait(ids, timeout_s=120)
    assert waited.counts == {"succeeded": 4}
    assert {t.id for t in waited.tasks} == set(ids)
    for t in waited.tasks:
        assert t.clipped and t.result is not None
        assert t.result.output_bytes == 2 * n
        assert len(t.result.output.encode()) <= 1024
    page = await cfn.task_list(limit=100)
    assert len(page.tasks) == 4 and all(t.clipped for t in page.tasks)
    status = await cfn.task_status(ids[0])
    assert status.clipped and status.result is not None and status.result.output_bytes == 2 * n
    full = await cfn.task_full(status)
    assert full.result is not None and full.result.output == "é" * n
    assert full.result.stderr == "done\n"
    # Odd ranges never split a character, and ranges join up exactly.
    chunk = await cfn.task_read(ids[0], offset=1, limit_bytes=7)
    assert chunk.offset == 1 and chunk.data == "ééé" and chunk.next_offset == 6
    with pytest.raises(InvalidArgs, match="past the end"):
        await cfn.task_read(ids[0], offset=2 * n + 1)
    # The CLI: `run --wait` and `task output` print it whole, `task status` too.
    proc = await asyncio.to_thread(cfnctl, d, "run", "--type", "big", "--wait", f"out:{n}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "é" * n + "\n"  # the CLI ends what it prints with a newline
    proc = await asyncio.to_thread(cfnctl, d, "task", "output", ids[1])
    assert proc.returncode == 0 and proc.stdout == "é" * n
    proc = await asyncio.to_thread(cfnctl, d, "--json", "task", "status", ids[2])
    assert proc.returncode == 0 and ("é" * n) in proc.stdout


async def test_a_task_text_over_the_frame_cap_is_uploaded_in_chunks(
    d: Daemon, cfn: AsyncClient, tmp_path: Path
) -> None:
    await cfn.call("swarm.init", topology="mesh", max_agents=2, name="text")
    text = ("ü" + "x" * 99) * 20_000  # 2 MB, a two-byte character every 100
    task = await cfn.task_submit(text, type="big")
    assert task.clipped and task.text_bytes == len(text.encode())
    (done,) = (await cfn.task_wait([task.id], timeout_s=120)).tasks
    assert done.status == "succeeded", done
    assert done.result is not None and done.result.output.strip() == str(len(text.encode()))
    assert await cfn.task_field(task.id, "text") == text
    # From a file with the CLI.
    path = tmp_path / "task.txt"
    path.write_text(text, encoding="utf-8")
    proc = await asyncio.to_thread(cfnctl, d, "run", "--type", "big", "--wait", "--file", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(len(text.encode()))
    with pytest.raises(NotFound, match="no upload"):
        await cfn.call("task.upload", data="more", upload="u-unknown")
    with pytest.raises(NotFound, match="no upload"):
        await cfn.call("task.submit", upload="u-unknown", type="big")


async def test_an_upload_over_the_text_limit_is_refused(daemon_factory: DaemonFactory) -> None:
    d = await daemon_factory(config_text=CONFIG, **FAST, **{"tasks.max_text_bytes": 4096})
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=2, name="limit")
        first = await cfn.call("task.upload", data="x" * 3000)
        with pytest.raises(InvalidArgs, match="max_text_bytes"):
            await cfn.call("task.upload", data="x" * 3000, upload=first.upload)
        with pytest.raises(NotFound):  # dropped, not left half-full
            await cfn.call("task.submit", upload=first.upload, type="big")


async def test_waits_and_pages_over_thousands_of_tasks_fit_in_replies(
    d: Daemon, cfn: AsyncClient, key_prefix: str
) -> None:
    raw = aioredis.Redis.from_url(SHARED_REDIS)
    try:
        await seed_swarm(raw, key_prefix, "many", indexed=True)
        await seed_tasks(raw, key_prefix, "many", "succeeded", 3000, first="s", indexed=True,
                         result=OUTPUT_10K)  # fmt: skip
        await seed_tasks(raw, key_prefix, "many", "failed", 10, first="f", indexed=True)
    finally:
        await raw.aclose()
    ids = [f"s0-{i}" for i in range(1, 3001)] + [f"f0-{i}" for i in range(1, 11)]
    started = time.perf_counter()
    waited = await cfn.task_wait(ids, swarm="many", timeout_s=60)
    took = time.perf_counter() - started
    assert waited.counts == {"succeeded": 3000, "failed": 10}
    assert waited.omitted == 3010 - len(waited.tasks) > 0
    assert [t.status for t in waited.tasks[:10]] == ["failed"] * 10  # failures first
    print(f"task.wait of 3010 finished tasks: {took * 1000:.0f} ms")
    # Every task exactly once across the pages, each page within the frame.
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await cfn.task_list(swarm="many", limit=1000, cursor=cursor)
        seen += [t.id for t in page.tasks]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and pages > 3
    # `wait --all`: nothing unfinished, so it returns at once (O(1) checks).
    assert (await cfn.task_wait(all=True, swarm="many", timeout_s=10)).counts == {}
