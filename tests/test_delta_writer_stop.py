"""The delta writer's stop() returns even when its beat's cancellation is swallowed by a library
call it was inside (Python 3.11's asyncio.wait_for, used by redis-py, returns the inner result
when the inner call finishes in the iteration it is cancelled). A drained node once hung in
stop() that way: the writer went back to waiting for deltas that never came."""

from __future__ import annotations

import asyncio

import pytest

from realtime.runs import delta_writer
from realtime.runs.delta_writer import DeltaWriter
from sessions_app.services import ClaimedRun

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

    monkeypatch.setattr(delta_writer, "db", lambda fn, **_: lambda *a, **kw: asyncio.sleep(0, _committed(*a, **kw)))
    monkeypatch.setattr(delta_writer, "publish_many", publish_many)
    return reached, swallowed


def _run(writer: DeltaWriter, conversation_id: str, run_id: str, failures: list):
    claim = ClaimedRun(run_id=run_id, conversation_id=conversation_id, fencing_token=1, takeover=False, events=[])
    return writer.open(claim, failures.append)


async def test_stop_returns_when_the_beat_swallows_its_cancellation(swallowing_publish):
    reached, swallowed = swallowing_publish
    writer = DeltaWriter(lease_seconds=5)
    failures: list = []
    text = _run(writer, "c1", "r1", failures)
    text.add("Hel")
    committed = asyncio.create_task(text.committed())
    await asyncio.wait_for(reached.wait(), 2)

    await asyncio.wait_for(writer.stop(), 2)

    assert len(swallowed) == 1
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("delta-writer")] == []
    # The delta was committed before the cancellation, and its run hears so.
    await asyncio.wait_for(committed, 1)
    assert (text.committed_upto, failures) == (1, [])


async def test_stop_drops_text_still_waiting_and_a_later_text_starts_a_new_beat(swallowing_publish, monkeypatch):
    reached, _ = swallowing_publish
    writer = DeltaWriter(lease_seconds=5)
    failures: list = []
    first = _run(writer, "c1", "r1", failures)
    first.add("a")
    await asyncio.wait_for(reached.wait(), 2)
    second = _run(writer, "c2", "r2", failures)
    second.add("b")  # the beat is inside the first batch: this waits for the next one
    waiting = asyncio.create_task(second.committed())
    await asyncio.sleep(0)

    await asyncio.wait_for(writer.stop(), 2)

    assert first.committed_upto == 1
    with pytest.raises(asyncio.CancelledError):
        await waiting

    async def published(items):
        return None

    monkeypatch.setattr(delta_writer, "publish_many", published)
    third = _run(writer, "c3", "r3", failures)
    third.add("c")
    await asyncio.wait_for(third.committed(), 2)
    assert failures == []
    await writer.stop()
