"""The python executor reuses its daemon threads, but never one still stuck in a task."""

from __future__ import annotations

import threading

from cfn_daemon.agent.executors import _in_thread


async def test_a_finished_thread_serves_the_next_call() -> None:
    first = await _in_thread(lambda _: threading.current_thread(), None)
    second = await _in_thread(lambda _: threading.current_thread(), None)
    assert first is second


async def test_a_stuck_call_does_not_block_the_next_one() -> None:
    release = threading.Event()
    stuck_ident: list[threading.Thread] = []

    def stuck(_: object) -> None:
        stuck_ident.append(threading.current_thread())
        release.wait(30)

    pending = _in_thread(stuck, None)
    try:
        other = await _in_thread(lambda _: threading.current_thread(), None)
        assert not pending.done()
        assert other not in stuck_ident
    finally:
        release.set()
        await pending
