"""Group commit of agent deltas: every run of a node hands its coalesced text to one writer,
which commits whatever is pending for all runs in one transaction, then the next batch.

Per-delta costs (a transaction, several statements, a thread hop) were the node's limit at
~120 events/s; batched, the cost is shared by every run in the batch, and while a batch is
being written each run's next text keeps coalescing, so the write rate adapts to load
instead of queueing behind it.
"""

from __future__ import annotations

import asyncio
import logging

from realtime.core import metrics
from realtime.fanout.publish import publish_many
from realtime.infra.db import db
from realtime.infra.transient import warn_failed
from sessions_app import services

log = logging.getLogger(__name__)

MAX_BATCH = 500
# How often stop() repeats the cancellation of a lane that has not ended yet.
STOP_RECANCEL_SECONDS = 0.1


class DeltaWriter:
    def __init__(self, lease_seconds: float, lanes: int = 2):
        self.lease_seconds = lease_seconds
        # Two batches may be in flight: while one commits, the next one is already being
        # written, so a delta never waits for a whole batch it is not part of. A run has at
        # most one write in flight, so concurrent batches never touch the same run; they
        # lock conversations in key order, so they cannot deadlock.
        self.lanes = lanes
        self._pending: list[tuple[services.DeltaWrite, asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        # Set by stop(): the lanes return at their next check instead of waiting for more work.
        # Cancelling alone was not enough: we found a drained node hanging in stop() because
        # a lane's cancellation was swallowed inside redis-py (Python 3.11's asyncio.wait_for
        # returns the result when the inner call finishes in the iteration it is cancelled),
        # and the lane went back to waiting for deltas that would never come.
        self._stopping = False
        self.batches = 0
        self.writes = 0
        self.busy_seconds = 0.0
        # How long a batch takes lately (moving average, seconds): the node's load, as the runs'
        # coalescing window sees it.
        self.recent_batch_seconds = 0.0

    async def write(self, conversation_id: str, run_id: str, fencing_token: int, text: str) -> list[dict]:
        """Commits and publishes one delta of a run (at most one in flight per run); returns its
        frames or raises LeaseLost / RunCancelled like services.append_run_delta."""
        loop = asyncio.get_running_loop()
        if not self._tasks or any(t.done() for t in self._tasks):
            for task in self._tasks:
                task.cancel()
            self._stopping = False
            self._wake = asyncio.Event()
            self._tasks = [loop.create_task(self._run(), name=f"delta-writer-{i}") for i in range(self.lanes)]
        future = loop.create_future()
        self._pending.append((services.DeltaWrite(conversation_id, run_id, fencing_token, text), future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and not self._stopping:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[services.DeltaWrite, asyncio.Future]]) -> None:
        live = [(w, f) for w, f in batch if not f.done()]  # a run cancelled while waiting
        if not live:
            return
        started = asyncio.get_running_loop().time()
        try:
            outcomes = await db(services.append_run_deltas)([w for w, _ in live], self.lease_seconds)
        except asyncio.CancelledError:
            for _, future in live:
                if not future.done():
                    future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every waiting run sees the failure; warn_failed logs a bug's traceback
            warn_failed(log, "a batch of deltas failed; its runs stop and are taken up again later", exc=exc)
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        self.writes += len(live)
        took = asyncio.get_running_loop().time() - started
        self.busy_seconds += took
        self.recent_batch_seconds = 0.8 * self.recent_batch_seconds + 0.2 * took
        metrics.delta_batch(len(live), took)
        if took > 0.1:
            log.debug("slow delta batch: %d writes in %.0f ms", len(live), took * 1000)
        if self.batches % 200 == 0:
            log.info("delta writer: %d batches, %.1f writes/batch, %.1f ms/batch", self.batches,
                     self.writes / self.batches, 1000 * self.busy_seconds / self.batches)
        # Published before the runs hear back, so a run's next delta cannot be announced
        # ahead of this one; one pipelined round trip for every conversation of the batch.
        committed = [(w.conversation_id, outcomes[w.run_id]) for w, _ in live]
        await publish_many([(cid, events) for cid, events in committed if not isinstance(events, Exception)])
        for write, future in live:
            if future.done():
                continue
            outcome = outcomes[write.run_id]
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def stop(self) -> None:
        """Ends the lanes and cancels every delta still waiting; returns once no lane runs."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        while pending:
            # A lane whose cancellation a library swallowed sees _stopping at its next check;
            # one that is still inside a call is cancelled again.
            _, pending = await asyncio.wait(pending, timeout=STOP_RECANCEL_SECONDS)
            for task in pending:
                task.cancel()
        self._tasks = []
        for _, future in self._pending:
            if not future.done():
                future.cancel()
        self._pending.clear()
