"""The delta writer's stop() returns even when a lane's cancellation is swallowed by a library
call it was inside (Python 3.11's asyncio.wait_for, used by redis-py, returns the inner result
when the inner call finishes in the iteration it is cancelled). A drained node once hung in
stop() that way: the lane went back to waiting for deltas that never came."""

from __future__ import annotations

import asyncio

import pytest

from realtime.runs import delta_writer
from realtime.runs.delta_writer import DeltaWriter

pytestmark = pytest.mark.pure


def _committed(writes, lease_seconds):
    return {w.run_id: [{"type": "agent.delta", "run_id": w.run_id, "text": w.text}] for w in writes}


@pytest.fixture
def swallowing_publish(monkeypatch):
    """Publishing blocks until cancelled, then returns as if it had finished: the cancellation
    is gone, as with wait_for on Python 3.11."""
    reached = asyncio.Event()
    swallowed = []

    async def publish_many(items):
        reached.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.append(items)

    monkeypatch.setattr(delta_writer, "db", lambda fn: lambda *a, **kw: asyncio.sleep(0, _committed(*a, **kw)))
    monkeypatch.setattr(delta_writer, "publish_many", publish_many)
    return reached, swallowed


async def test_stop_returns_when_a_lane_swallows_its_cancellation(swallowing_publish):
    reached, swallowed = swallowing_publish
    writer = DeltaWriter(lease_seconds=5)
    write = asyncio.create_task(writer.write("c1", "r1", 1, "Hel"))
    await asyncio.wait_for(reached.wait(), 2)

    await asyncio.wait_for(writer.stop(), 2)

    assert len(swallowed) == 1
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("delta-writer")] == []
    # The delta was committed before the cancellation, and its run hears so.
    assert await asyncio.wait_for(write, 1) == [{"type": "agent.delta", "run_id": "r1", "text": "Hel"}]


async def test_stop_cancels_deltas_still_waiting_and_a_later_write_starts_new_lanes(swallowing_publish, monkeypatch):
    reached, _ = swallowing_publish
    writer = DeltaWriter(lease_seconds=5, lanes=1)
    first = asyncio.create_task(writer.write("c1", "r1", 1, "a"))
    await asyncio.wait_for(reached.wait(), 2)
    queued = asyncio.create_task(writer.write("c2", "r2", 1, "b"))  # the only lane is busy
    await asyncio.sleep(0)

    await asyncio.wait_for(writer.stop(), 2)

    assert (await first)[0]["text"] == "a"
    with pytest.raises(asyncio.CancelledError):
        await queued

    async def published(items):
        return None

    monkeypatch.setattr(delta_writer, "publish_many", published)
    assert (await asyncio.wait_for(writer.write("c3", "r3", 1, "c"), 2))[0]["text"] == "c"
    await writer.stop()
