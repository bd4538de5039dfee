"""A database call is in flight from the moment it is handed to a thread until it ends there,
whatever its caller does meanwhile (realtime.infra.db.HANDED): the suite waits for none to be left
before it empties the database, since a stopped node's late transaction deadlocked Django's flush
(tests/conftest.py, `_database_calls_ended`)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from realtime.infra.db import HANDED, db
from tests.support.gates import Gate
from tests.support.waiting import eventually

pytestmark = pytest.mark.pure


@pytest.fixture
def one_thread():
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-db")
    yield executor
    executor.shutdown(wait=True)


async def test_a_call_is_in_flight_from_its_hand_over_to_its_end():
    gate = Gate()
    call = asyncio.ensure_future(db(gate.hold)())
    await gate.arrived()
    assert HANDED.count == 1
    assert not HANDED.wait_idle(0.05)
    gate.open()
    await call
    assert HANDED.count == 0
    assert HANDED.wait_idle(0)


async def test_a_call_waiting_for_a_busy_thread_is_in_flight(one_thread):
    gate = Gate()
    first = asyncio.ensure_future(db(gate.hold, executor=one_thread)())
    await gate.arrived()
    second = asyncio.ensure_future(db(lambda: "second", executor=one_thread)())
    await eventually(lambda: HANDED.count == 2, timeout=5, what="the waiting call counted")
    gate.open()
    assert await asyncio.gather(first, second) == [None, "second"]
    assert HANDED.count == 0


async def test_a_started_call_whose_caller_gave_up_is_in_flight_until_it_ends():
    gate = Gate()
    call = asyncio.ensure_future(db(gate.around_sync(lambda: None))())
    await gate.arrived()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert HANDED.count == 1
    assert not HANDED.wait_idle(0.05)
    gate.open()
    assert await asyncio.to_thread(HANDED.wait_idle, 5)
    assert gate.passed


async def test_a_call_whose_caller_gave_up_before_a_thread_took_it_never_starts(one_thread):
    gate = Gate()
    started: list[str] = []
    first = asyncio.ensure_future(db(gate.hold, executor=one_thread)())
    await gate.arrived()
    second = asyncio.ensure_future(db(lambda: started.append("second"), executor=one_thread)())
    await eventually(lambda: HANDED.count == 2, timeout=5, what="the waiting call counted")
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert HANDED.count == 1  # no thread will end it: it is not in flight any more
    gate.open()
    await first
    # The thread has nothing left to run once its queue is empty.
    await asyncio.to_thread(one_thread.submit(lambda: None).result, 5)
    assert started == []
    assert HANDED.count == 0


async def test_a_call_that_could_not_be_handed_is_not_in_flight(one_thread):
    one_thread.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        await db(lambda: None, executor=one_thread)()
    assert HANDED.count == 0
