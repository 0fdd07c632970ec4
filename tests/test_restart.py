"""The supervision policy, pure: the keeper's restarts and the refilling budget."""

from __future__ import annotations

import asyncio

import pytest

from cfn_daemon.core.restarts import WINDOW_S, RestartBudget
from cfn_daemon.util.restart import Backoff, Fatal, Keeper

FAST = Backoff(base_s=0.001, max_s=0.004, healthy_s=60.0)


class Outage(Exception):
    pass


def keeper(**kwargs: object) -> Keeper:
    return Keeper(is_outage=lambda e: isinstance(e, Outage), backoff=FAST, **kwargs)  # type: ignore[arg-type]


async def test_a_failing_child_is_restarted_until_it_returns() -> None:
    calls = 0

    async def body() -> None:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ValueError(f"bad moment {calls}")

    k = keeper()
    await k.run("child", body, asyncio.Event())
    assert calls == 4
    assert k.restarts.snapshot() == {"child": 3}
    assert k.restarts.last_error["child"] == "ValueError: bad moment 3"


async def test_an_outage_waits_for_the_store_instead_of_spinning() -> None:
    calls, back, waiting = 0, asyncio.Event(), asyncio.Event()

    async def wait_available() -> None:
        waiting.set()
        await back.wait()

    async def body() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Outage()

    k = keeper(wait_available=wait_available)
    task = asyncio.create_task(k.run("child", body, asyncio.Event()))
    await asyncio.wait_for(waiting.wait(), 5)
    assert calls == 1 and not task.done()
    back.set()
    await task
    assert calls == 2


async def test_fatal_and_cancellation_end_the_loop() -> None:
    async def fatal() -> None:
        raise Fatal("bad config")

    with pytest.raises(Fatal):
        await keeper().run("child", fatal, asyncio.Event())

    async def forever() -> None:
        raise ValueError("again")

    stop = asyncio.Event()
    k = keeper()
    task = asyncio.create_task(k.run("child", forever, stop))
    while k.restarts.counts["child"] < 3:  # it keeps restarting until cancelled
        await k.restarts.changed.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_stop_during_the_backoff_returns() -> None:
    stop = asyncio.Event()
    k = Keeper(backoff=Backoff(base_s=60.0, max_s=60.0))

    async def body() -> None:
        stop.set()
        raise ValueError("once")

    await asyncio.wait_for(k.run("child", body, stop), 5)


def test_backoff_doubles_up_to_its_cap() -> None:
    b = Backoff(base_s=0.5, max_s=30.0)
    assert [b.delay_s(n) for n in (1, 2, 3, 7, 8, 50)] == [0.5, 1.0, 2.0, 30.0, 30.0, 30.0]


def test_a_spent_budget_refills_instead_of_stopping_for_good() -> None:
    budget = RestartBudget(per_minute=2, backoff_s=1.0, backoff_max_s=30.0)
    assert budget.next_start(0.0) == 1.0
    assert budget.take(1.0)
    assert budget.next_start(1.0) == 3.0  # backoff doubles with recent starts
    assert budget.take(3.0)
    assert not budget.take(4.0)
    assert budget.waiting_for_window(4.0)
    # Full: the next start waits for the oldest to leave the window, then succeeds.
    at = budget.next_start(4.0)
    assert at == 1.0 + WINDOW_S
    assert at is not None and budget.take(at)
    # Long after, everything has refilled and the backoff is back at its base.
    assert budget.next_start(1000.0) == 1001.0


def test_backoff_is_capped_and_zero_budget_never_restarts() -> None:
    budget = RestartBudget(per_minute=1000, backoff_s=1.0, backoff_max_s=30.0)
    for n in range(40):
        assert budget.take(float(n) * 0.001)
    assert budget.next_start(0.1) == pytest.approx(30.1)
    assert RestartBudget(0, 1.0, 30.0).next_start(0.0) is None
    assert not RestartBudget(0, 1.0, 30.0).take(0.0)


def test_outages_are_told_from_crashes_through_exception_groups() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from cfn_client.wire.errors import StoreUnavailable
    from cfn_daemon.store.client import is_outage

    down = RedisConnectionError("Connection refused")
    assert is_outage(down) and is_outage(StoreUnavailable("Redis is unavailable"))
    assert is_outage(ExceptionGroup("children", [down, StoreUnavailable("x")]))
    assert not is_outage(ExceptionGroup("children", [down, ValueError("a bug")]))
    assert not is_outage(KeyError("a bug"))
