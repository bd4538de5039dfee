"""What a database call keeps from Channels' `database_sync_to_async` since `db()` hands it to its
thread itself (realtime/infra/db.py, issue 22): the caller's log fields reach the thread, and a
cancelled caller stops waiting at once while the call runs to its end."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from realtime.infra import logcontext
from realtime.infra.db import db

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_callers_log_fields_reach_the_database_thread(caplog):
    def logs() -> str:
        logging.getLogger("tests.db_hop").warning("in the thread")
        return threading.current_thread().name

    logcontext.bind_only(run_id="r-1", conversation_id="c-1")
    with caplog.at_level(logging.WARNING, logger="tests.db_hop"):
        thread = await db(logs)()
    [record] = caplog.records
    assert thread != threading.current_thread().name
    assert (getattr(record, "run_id", None), getattr(record, "conversation_id", None)) == ("r-1", "c-1")


async def test_a_cancelled_caller_stops_waiting_while_the_call_finishes_in_its_thread():
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        release.wait(5)
        finished.set()

    call = asyncio.ensure_future(db(slow)())
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(call, 1)  # at once: the thread is still inside `slow`
    assert not finished.is_set()
    release.set()
    await asyncio.get_running_loop().run_in_executor(None, finished.wait, 5)
    assert finished.is_set()

