"""The node's group commit runs on one beat (realtime/runs/delta_writer.py, issue 22): every
run's text that became due while a batch was being written goes into the next batch, one batch
per coalescing window, and a run's own writes never overlap and keep their order. The runs that
end are completed right after their last text's batch, beside the beat."""

from __future__ import annotations

import asyncio

import pytest

from realtime.runs import delta_writer
from realtime.runs.delta_writer import DeltaWriter
from sessions_app import services
from sessions_app.services import ClaimedRun
from tests.support.waiting import eventually

pytestmark = pytest.mark.pure


class FakeLog:
    """Stands in for the database calls of the writer: services.append_run_deltas (each batch's
    writes are recorded; a batch can be held at a gate until the test releases it) and
    services.complete_runs (each call's runs are recorded; a call can be held at its own gate)."""

    def __init__(self) -> None:
        self.batches: list[list[services.DeltaWrite]] = []
        self.started_at: list[float] = []
        self.entered = asyncio.Event()
        self.hold: asyncio.Event | None = None
        self.refuse: set[str] = set()
        self.fail: Exception | None = None  # the whole batch fails (the database unreachable)
        self.completions: list[list[str]] = []
        self.completing = asyncio.Event()
        self.hold_completions: asyncio.Event | None = None
        self.fail_completions: Exception | None = None  # the whole call fails

    def db(self, fn, **options):
        if fn is delta_writer._complete_runs:  # noqa: SLF001 - the completion call the writer makes
            return self._complete
        assert fn is services.append_run_deltas, fn
        return self._append

    async def _append(self, writes, lease_seconds):
        self.batches.append(list(writes))
        self.started_at.append(asyncio.get_running_loop().time())
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        return {w.run_id: services.LeaseLost("lost") if w.run_id in self.refuse
                else [{"type": "agent.delta", "run_id": w.run_id, "text": w.text}] for w in writes}

    async def _complete(self, completions):
        self.completions.append([c.run_id for c in completions])
        self.completing.set()
        if self.hold_completions is not None:
            await self.hold_completions.wait()
        if self.fail_completions is not None:
            raise self.fail_completions
        return [services.Committed(c.conversation_id, [{"type": "agent.completed", "run_id": c.run_id}])
                for c in completions]


@pytest.fixture
def fake_log(monkeypatch) -> FakeLog:
    log = FakeLog()
    log.publishes = []
    published: list = []

    async def publish_many(items):
        published.extend(items)
        log.publishes.append(list(items))

    monkeypatch.setattr(delta_writer, "db", log.db)
    monkeypatch.setattr(delta_writer, "publish_many", publish_many)
    log.published = published
    return log


def _open(writer: DeltaWriter, n: int, failures: list | None = None):
    claim = ClaimedRun(run_id=f"r{n}", conversation_id=f"c{n}", fencing_token=1, takeover=False, events=[])
    return writer.open(claim, (failures if failures is not None else []).append)


async def test_text_that_became_due_during_a_batch_goes_into_one_next_batch(fake_log):
    writer = DeltaWriter(lease_seconds=5, coalesce=0.0, coalesce_max=0.0)
    fake_log.hold = asyncio.Event()
    first = _open(writer, 0)
    first.add("a")
    await asyncio.wait_for(fake_log.entered.wait(), 2)
    runs = [_open(writer, n) for n in range(1, 11)]
    for run in runs:
        run.add("x")
        run.add("y")
    first.add("b")  # its first write is in flight: this waits for the next batch
    fake_log.hold.set()

    await asyncio.wait_for(asyncio.gather(first.committed(), *(r.committed() for r in runs)), 2)

    assert [[(w.run_id, w.text) for w in batch] for batch in fake_log.batches] == [
        [("r0", "a")],
        [*((f"r{n}", "xy") for n in range(1, 11)), ("r0", "b")],
    ]
    assert [cid for cid, _ in fake_log.published] == ["c0", *(f"c{n}" for n in range(1, 11)), "c0"]
    await writer.stop()


async def test_batches_are_at_least_one_window_apart_and_the_first_goes_at_once(fake_log):
    writer = DeltaWriter(lease_seconds=5, coalesce=0.2, coalesce_max=0.2)
    run = _open(writer, 0)
    loop = asyncio.get_running_loop()
    added_at = loop.time()
    run.add("a")
    await asyncio.wait_for(run.committed(), 2)
    run.add("b")
    await asyncio.wait_for(run.committed(), 2)

    first, second = fake_log.started_at
    assert first - added_at < 0.1  # an idle node writes at once
    assert second - first >= 0.2
    await writer.stop()


async def test_a_refused_write_fails_its_run_only_and_stops_its_text(fake_log):
    writer = DeltaWriter(lease_seconds=5, coalesce=0.0, coalesce_max=0.0)
    failures: list = []
    good, lost = _open(writer, 1, failures), _open(writer, 2, failures)
    fake_log.refuse = {"r2"}
    good.add("a")
    lost.add("b")

    await asyncio.wait_for(good.committed(), 2)
    with pytest.raises(services.LeaseLost):
        await asyncio.wait_for(lost.committed(), 2)
    assert [type(f) for f in failures] == [services.LeaseLost]
    lost.add("c")  # ignored: the run is over
    good.add("d")
    await asyncio.wait_for(good.committed(), 2)
    assert [[w.run_id for w in batch] for batch in fake_log.batches] == [["r1", "r2"], ["r1"]]
    await writer.stop()


async def test_a_run_whose_batch_failed_is_not_written_again_with_text_added_meanwhile(fake_log):
    """The batch fails as a whole while its run adds more text: the run is over (taken up again
    later from its committed text) and nothing of it reaches a later batch, not even empty."""
    writer = DeltaWriter(lease_seconds=5, coalesce=0.0, coalesce_max=0.0)
    failures: list = []
    failed, other = _open(writer, 1, failures), _open(writer, 2)
    fake_log.hold, fake_log.fail = asyncio.Event(), OSError("database unreachable")
    failed.add("a")
    await asyncio.wait_for(fake_log.entered.wait(), 2)
    failed.add("b")  # during the failing commit
    fake_log.hold.set()
    with pytest.raises(OSError):
        await asyncio.wait_for(failed.committed(), 2)
    fake_log.fail = None
    other.add("c")
    await asyncio.wait_for(other.committed(), 2)

    assert [[(w.run_id, w.text) for w in batch] for batch in fake_log.batches] == [[("r1", "a")], [("r2", "c")]]
    assert [type(f) for f in failures] == [OSError]
    await writer.stop()


async def test_a_finishing_run_is_completed_right_after_the_batch_of_its_last_text_and_published_after_it(fake_log):
    writer = DeltaWriter(lease_seconds=5, coalesce=0.0, coalesce_max=0.0)
    fake_log.hold = asyncio.Event()
    other = _open(writer, 0)
    other.add("busy")
    await asyncio.wait_for(fake_log.entered.wait(), 2)  # a batch in flight: the next gathers
    run = _open(writer, 1)
    run.add("last words")
    finishing = asyncio.ensure_future(run.finish({"k": 1}))
    while run.completion is None:  # finish() has asked for its completion (one pass of the loop)
        await asyncio.sleep(0)
    fake_log.hold.set()
    committed = await asyncio.wait_for(finishing, 2)

    assert committed.events == [{"type": "agent.completed", "run_id": "r1"}]
    assert [[w.text for w in batch] for batch in fake_log.batches] == [["busy"], ["last words"]]
    assert fake_log.completions == [["r1"]]
    assert fake_log.published[-2:] == [("c1", [{"type": "agent.delta", "run_id": "r1", "text": "last words"}]),
                                       ("c1", [{"type": "agent.completed", "run_id": "r1"}])]
    await writer.stop()


async def test_the_beat_goes_on_while_runs_are_being_completed(fake_log):
    """Completing the runs that end is not in the way of everyone else's text: a batch is
    committed and published while a completion call is still being written."""
    writer = DeltaWriter(lease_seconds=5, coalesce=0.0, coalesce_max=0.0)
    fake_log.hold_completions = asyncio.Event()
    ending, streaming = _open(writer, 0), _open(writer, 1)
    ending.add("the end")
    finishing = asyncio.ensure_future(ending.finish(None))
    await asyncio.wait_for(fake_log.completing.wait(), 2)
    streaming.add("more")
    await asyncio.wait_for(streaming.committed(), 2)

    assert not finishing.done()
    assert fake_log.published == [("c0", [{"type": "agent.delta", "run_id": "r0", "text": "the end"}]),
                                  ("c1", [{"type": "agent.delta", "run_id": "r1", "text": "more"}])]
    fake_log.hold_completions.set()
    assert (await asyncio.wait_for(finishing, 2)).events == [{"type": "agent.completed", "run_id": "r0"}]
    assert fake_log.published[-1] == ("c0", [{"type": "agent.completed", "run_id": "r0"}])
    await writer.stop()


async def test_runs_that_end_while_a_completion_is_written_are_completed_together_in_the_next_call(fake_log):
    writer = DeltaWriter(lease_seconds=5, coalesce=0.0, coalesce_max=0.0)
    fake_log.hold_completions = asyncio.Event()
    first = asyncio.ensure_future(_open(writer, 0).finish(None))
    await asyncio.wait_for(fake_log.completing.wait(), 2)
    rest = [asyncio.ensure_future(_open(writer, n).finish(None)) for n in range(1, 6)]
    await eventually(lambda: len(writer._to_complete) == 5, timeout=2,  # noqa: SLF001 - what waits is the point
                     what="five runs waiting for the next completion call")
    fake_log.hold_completions.set()
    await asyncio.wait_for(asyncio.gather(first, *rest), 2)

    assert fake_log.completions == [["r0"], ["r1", "r2", "r3", "r4", "r5"]]
    # Their agent.completed in one publish.
    assert fake_log.publishes[-1] == [(f"c{n}", [{"type": "agent.completed", "run_id": f"r{n}"}]) for n in range(1, 6)]
    await writer.stop()


async def test_a_run_whose_last_text_is_refused_is_not_completed_and_hears_why(fake_log):
    writer = DeltaWriter(lease_seconds=5, coalesce=0.0, coalesce_max=0.0)
    failures: list = []
    run = _open(writer, 0, failures)
    fake_log.refuse.add("r0")
    run.add("late")
    with pytest.raises(services.LeaseLost):
        await asyncio.wait_for(run.finish(None), 2)
    assert [type(f).__name__ for f in failures] == ["LeaseLost"]
    assert fake_log.published == [] and fake_log.completions == []
    await writer.stop()


async def test_a_run_with_nothing_left_to_write_is_completed_without_a_batch(fake_log):
    writer = DeltaWriter(lease_seconds=5, coalesce=0.0, coalesce_max=0.0)
    run = _open(writer, 0)
    committed = await asyncio.wait_for(run.finish(None), 2)
    assert committed.events == [{"type": "agent.completed", "run_id": "r0"}]
    assert fake_log.batches == [] and fake_log.completions == [["r0"]]
    await writer.stop()


async def test_a_completion_call_that_fails_fails_its_runs_and_the_next_call_goes_on(fake_log):
    writer = DeltaWriter(lease_seconds=5, coalesce=0.0, coalesce_max=0.0)
    failures: list = []
    fake_log.fail_completions = OSError("database unreachable")
    with pytest.raises(OSError):
        await asyncio.wait_for(_open(writer, 0, failures).finish(None), 2)
    assert [type(f) for f in failures] == [OSError]
    fake_log.fail_completions = None
    assert (await asyncio.wait_for(_open(writer, 1).finish(None), 2)).events == [
        {"type": "agent.completed", "run_id": "r1"}]
    assert fake_log.completions == [["r0"], ["r1"]] and fake_log.published == [
        ("c1", [{"type": "agent.completed", "run_id": "r1"}])]
    await writer.stop()


async def test_a_writer_stopped_during_a_completion_returns_and_its_run_stops_waiting(fake_log):
    writer = DeltaWriter(lease_seconds=5, coalesce=0.0, coalesce_max=0.0)
    fake_log.hold_completions = asyncio.Event()  # never released
    finishing = asyncio.ensure_future(_open(writer, 0).finish(None))
    await asyncio.wait_for(fake_log.completing.wait(), 2)
    await asyncio.wait_for(writer.stop(), 2)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(finishing, 2)
