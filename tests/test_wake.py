"""realtime.core.wake.Wake behaves as asyncio.Event does for its one waiter (the socket's sender and
watchdog wait on one each), and holds nothing while nobody waits."""

import asyncio

import pytest

from realtime.core.wake import Wake

pytestmark = pytest.mark.pure


async def test_wait_returns_at_once_when_set_and_waits_after_clear():
    wake = Wake()
    wake.set()
    await asyncio.wait_for(wake.wait(), 1)
    await asyncio.wait_for(wake.wait(), 1)  # still set: a wait does not clear it
    wake.clear()
    waiting = asyncio.ensure_future(wake.wait())
    await asyncio.sleep(0)
    assert not waiting.done() and wake.waiting
    wake.set()
    await asyncio.wait_for(waiting, 1)
    assert not wake.waiting


async def test_a_set_before_the_waiter_runs_is_not_lost():
    wake = Wake()
    waiting = asyncio.ensure_future(wake.wait())
    wake.set()  # the task has not started waiting yet
    await asyncio.wait_for(waiting, 1)


async def test_a_cancelled_wait_leaves_no_waiter_and_a_later_set_is_harmless():
    wake = Wake()
    waiting = asyncio.ensure_future(wake.wait())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not wake.waiting
    wake.set()
    await asyncio.wait_for(wake.wait(), 1)


async def test_a_timeout_around_the_wait_as_the_watchdog_uses_it():
    wake = Wake()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await wake.wait()
    assert not wake.waiting


async def test_a_second_waiter_is_refused():
    wake = Wake()
    first = asyncio.ensure_future(wake.wait())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one waiter"):
        await wake.wait()
    wake.set()
    await asyncio.wait_for(first, 1)
