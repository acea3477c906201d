"""Coarse deadlines: a wait past its deadline ends with the caller's timeout, up to one
tick late and never early; a wait that ends in time is untouched; another cancellation
wins over the deadline."""

from __future__ import annotations

import asyncio

import pytest

from cwndproxy.deadlines import RESOLUTION, deadlines


async def wait_with_deadline(fut: asyncio.Future[int], seconds: float) -> int:
    watch = deadlines()
    task = watch.arm(seconds)
    try:
        return await fut
    except asyncio.CancelledError:
        if watch.expired(task):
            raise TimeoutError from None
        raise
    finally:
        watch.disarm(task)


async def test_a_wait_past_its_deadline_times_out_within_one_tick() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await wait_with_deadline(loop.create_future(), 0.1)
    took = loop.time() - started
    assert 0.1 <= took <= 0.1 + RESOLUTION + 0.5
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0


async def test_a_wait_that_ends_in_time_returns_its_result() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.01, fut.set_result, 7)
    assert await wait_with_deadline(fut, 5.0) == 7
    await asyncio.sleep(RESOLUTION * 2)  # the ticker finds nothing armed and ends


async def test_a_cancellation_from_elsewhere_is_not_turned_into_a_timeout() -> None:
    loop = asyncio.get_running_loop()
    task = loop.create_task(wait_with_deadline(loop.create_future(), 60.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
