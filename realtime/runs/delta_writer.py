"""Group commit of agent deltas on a node-wide beat: every run of a node hands its text to its
`RunText`, and one writer commits whatever the node's runs have pending in one statement, then
publishes it in one round trip, at most once per coalescing window.

History, because each step was measured (docs/benchmarks.md):
- one transaction per delta, several statements and a thread hop each: the node's limit at
  ~120 events/s;
- a group commit fed by one coalescing timer per run (each run's pump awaited its own write):
  batches of a few writes, so per-batch costs (the thread hop, the pipelined publish) and the
  per-token wake-ups of every run's pump were paid per event (issue 22's profile: pump, writer,
  database hop and publish were 60% of the node's CPU per event at 100 streams);
- now one beat for the node: a run's text waits at most one window, as before, but every run's
  text of a window goes into one batch. Adding text is a list append; nothing wakes per token;
- a run's end (`finish`) is completed right after the batch of its last text, beside the beat:
  the runs that end while a completion call is in flight go together in the next one, in the
  shared database pool, while the beat goes on with everyone else's text.
  Completing them in the batch (the fourth step) held that batch's deltas back until the
  completions were written, and the next batch until they were done: when 500 answers end
  within half a second, a few batches of 100-120 completions took 95-135 ms each (a completion
  writes the whole answer three times: the message, its event and the run's row).

Rules:
- An event is published only after its commit (the log first, always).
- A run has at most one write in flight, and its writes commit in the order it added the text,
  so its `index` and the log's order follow the agent. Its completion is asked for only once its
  last text is committed and published, so `agent.completed` follows its last delta.
- A write refused for one run (LeaseLost, RunCancelled) fails that run only, and a run whose
  last text was refused is not completed; a batch that fails as a whole (the database
  unreachable) fails every run in it, and they are taken up again later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from realtime.core import metrics
from realtime.fanout.publish import publish_many
from realtime.infra.db import commit_executor, db
from realtime.infra.transient import warn_failed
from sessions_app import services

log = logging.getLogger(__name__)

MAX_BATCH = 500
# How often stop() repeats the cancellation of the beat that has not ended yet.
STOP_RECANCEL_SECONDS = 0.1


class RunText:
    """One run's text on its way to the log. The run adds text (`add`, no wait) and waits only
    where it must (`committed`: before a tool call, before its end)."""

    def __init__(self, writer: DeltaWriter, claim: services.ClaimedRun, on_failure: Callable[[BaseException], None]):
        self.writer = writer
        self.conversation_id = claim.conversation_id
        self.run_id = claim.run_id
        self.fencing_token = claim.fencing_token
        # Told once when a write of this run is refused or fails (the run's pump stops on it).
        self.on_failure = on_failure
        self.pending: list[str] = []
        self.added = 0  # pieces of text added so far
        self.committed_upto = 0  # of those, how many are committed
        self.failure: BaseException | None = None
        self.committed_at = 0.0  # loop time of the last commit: it renewed the lease
        self._waiters: list[tuple[int, asyncio.Future]] = []
        # Set by `finish`: the run's completion, written in the batch that takes its last text.
        self.completion: services.Completion | None = None
        self._completed: asyncio.Future | None = None

    def add(self, text: str) -> None:
        if self.failure is not None or not text:
            return
        self.pending.append(text)
        self.added += 1
        self.writer.due(self)

    async def committed(self) -> None:
        """Returns once every text added so far is committed; raises the run's failure."""
        if self.failure is not None:
            raise self.failure
        if self.committed_upto >= self.added:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((self.added, future))
        await future

    async def finish(self, memory: dict | None) -> services.Committed:
        """The agent is done: its last text goes in the next batch, as any text, and the run is
        completed (`complete_runs`) right after that batch, beside the beat (the module's
        history says why); returns the completion's events. Raises the run's failure (a
        refused write, a lost lease) instead; nothing is added after this."""
        if self.failure is not None:
            raise self.failure
        self.completion = services.Completion(self.conversation_id, self.run_id, self.fencing_token, memory)
        self._completed = asyncio.get_running_loop().create_future()
        self.writer.due(self)
        return await self._completed

    def close(self) -> None:
        """The run ended: nothing of it is written any more; whoever waits is cancelled."""
        self.writer.forget(self)
        self.pending.clear()
        for _, future in self._waiters:
            future.cancel()
        self._waiters.clear()
        if self._completed is not None:
            self._completed.cancel()

    # --- the writer's side ------------------------------------------------------------------

    def take(self) -> services.DeltaWrite | None:
        """The text pending, as one write (None when only the completion is due)."""
        if not self.pending:
            return None
        text = "".join(self.pending)
        self.pending.clear()
        return services.DeltaWrite(self.conversation_id, self.run_id, self.fencing_token, text)

    def completed(self, committed: services.Committed) -> None:
        if self._completed is not None and not self._completed.done():
            self._completed.set_result(committed)

    def written(self, upto: int, now: float) -> None:
        self.committed_upto = upto
        self.committed_at = now
        still = []
        for target, future in self._waiters:
            if target <= upto:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self._waiters = still

    def failed(self, exc: BaseException) -> None:
        if self.failure is not None:
            return
        self.failure = exc
        # Text added while its batch was being written is dropped with the run (it goes on
        # from its committed text when it is taken up again), and never written as an empty
        # delta by a later batch.
        self.writer.forget(self)
        self.pending.clear()
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(exc)
        self._waiters.clear()
        if self._completed is not None and not self._completed.done():
            self._completed.set_exception(exc)
        self.on_failure(exc)


class DeltaWriter:
    def __init__(self, lease_seconds: float, coalesce: float = 0.05, coalesce_max: float = 0.15):
        self.lease_seconds = lease_seconds
        self.coalesce = coalesce
        self.coalesce_max = max(coalesce, coalesce_max)
        # Runs with text waiting (insertion order: the oldest first when a batch is full).
        self._due: dict[str, RunText] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._next_at = 0.0  # loop time before which the next batch waits (one per window)
        self.batches = 0
        self.writes = 0
        self.busy_seconds = 0.0
        # How long a batch takes lately (moving average, seconds): the node's load, as the
        # coalescing window sees it. Completions are not part of it: they run beside the beat.
        self.recent_batch_seconds = 0.0
        # Runs whose last text is committed and published, waiting for their completion: those
        # that end while a completion call is in flight go together in the next one, in the
        # shared database pool (not on the commit thread: the beat goes on meanwhile).
        self._to_complete: list[RunText] = []
        self._completer: asyncio.Task | None = None

    def window(self) -> float:
        """Seconds between two batches: the base window, growing to twice the recent duration
        of a batch when the node is loaded, up to the maximum. Every token still arrives, in
        fewer, larger events: under load a node's cost follows its events, not its tokens."""
        return min(self.coalesce_max, max(self.coalesce, 2 * self.recent_batch_seconds))

    def open(self, claim: services.ClaimedRun, on_failure: Callable[[BaseException], None]) -> RunText:
        return RunText(self, claim, on_failure)

    def due(self, run: RunText) -> None:
        self._due[run.run_id] = run
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._beat(), name="delta-writer")
        self._wake.set()

    def forget(self, run: RunText) -> None:
        if self._due.get(run.run_id) is run:
            del self._due[run.run_id]

    async def _beat(self) -> None:
        wake = self._wake
        assert wake is not None
        loop = asyncio.get_running_loop()
        # A beat runs while it is the writer's beat: stop() (or a newer beat) ends it at its
        # next check. Cancelling alone was not enough: we found a drained node hanging in stop()
        # because a cancellation was swallowed inside redis-py (Python 3.11's asyncio.wait_for
        # returns the result when the inner call finishes in the iteration it is cancelled),
        # and the writer went back to waiting for deltas that would never come.
        me = asyncio.current_task()
        while self._task is me:
            await wake.wait()
            if self._task is not me:
                return
            wake.clear()
            # At most one batch per window, measured from a batch's start: a node with one quiet
            # stream writes its text at once, a busy node gathers a window's worth of every run.
            wait = self._next_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            # No run of it is in flight: the beat awaits each batch before it takes the next.
            ready = list(self._due.values())[:MAX_BATCH]
            if not ready:
                continue
            for run in ready:
                del self._due[run.run_id]
            self._next_at = loop.time() + self.window()
            await self._commit(ready)
            if self._due:
                wake.set()

    async def _commit(self, runs: list[RunText]) -> None:
        loop = asyncio.get_running_loop()
        upto = {run.run_id: run.added for run in runs}
        writes = [w for w in (run.take() for run in runs) if w is not None]
        # A finishing run's text is all in this batch (it adds nothing after `finish`).
        finishing = [run for run in runs if run.completion is not None]
        outcomes: dict[str, list[dict] | services.ServiceError] = {}
        if writes:
            started = loop.time()
            try:
                outcomes = await db(services.append_run_deltas, executor=commit_executor())(writes, self.lease_seconds)
            except asyncio.CancelledError:
                for run in runs:  # the node stops: its runs are cancelled too
                    run.close()
                raise
            except Exception as exc:  # noqa: BLE001 - every run of the batch sees the failure; warn_failed logs a bug's traceback
                warn_failed(log, "a batch of deltas failed; its runs stop and are taken up again later", exc=exc)
                for run in runs:
                    run.failed(exc)
                return
            self._measured(len(writes), loop.time() - started)
            # Published before the runs hear back, so a run's next delta cannot be announced
            # ahead of this one; one round trip for every conversation of the batch.
            events: dict[str, list[dict]] = {}
            for w in writes:
                if not isinstance(outcomes[w.run_id], Exception):
                    events.setdefault(w.conversation_id, []).extend(outcomes[w.run_id])
            await publish_many(list(events.items()))
        now = loop.time()
        for run in runs:
            outcome = outcomes.get(run.run_id)
            if isinstance(outcome, Exception):
                run.failed(outcome)
                continue
            if outcome is not None:  # its text was in the batch
                run.written(upto[run.run_id], now)  # text added meanwhile made it due again (`add`)
        ending = [run for run in finishing if run.failure is None]  # a refused last text: not completed
        if ending:
            self._to_complete.extend(ending)
            if self._completer is None or self._completer.done():
                self._completer = loop.create_task(self._complete_waiting(), name="run-completions")

    def _measured(self, writes: int, took: float) -> None:
        self.batches += 1
        self.writes += writes
        self.busy_seconds += took
        self.recent_batch_seconds = 0.8 * self.recent_batch_seconds + 0.2 * took
        metrics.delta_batch(writes, took)
        if took > 0.1:
            log.debug("slow delta batch: %d writes in %.0f ms", writes, took * 1000)
        if self.batches % 200 == 0:
            log.info("delta writer: %d batches, %.1f writes/batch, %.1f ms/batch", self.batches,
                     self.writes / self.batches, 1000 * self.busy_seconds / self.batches)

    async def _complete_waiting(self) -> None:
        """Completes the runs waiting for it, all in one call (`complete_runs`), then publishes
        their `agent.completed` in one round trip; the runs that ended meanwhile go next."""
        while self._to_complete:
            runs, self._to_complete = self._to_complete[:MAX_BATCH], self._to_complete[MAX_BATCH:]
            try:
                outcomes = await db(_complete_runs)([run.completion for run in runs])
            except asyncio.CancelledError:
                for run in runs:  # the node stops (a call already sent runs to its end in its thread)
                    run.close()
                raise
            except Exception as exc:  # noqa: BLE001 - every run of the call sees the failure; warn_failed logs a bug's traceback
                warn_failed(log, "completing %d runs failed; they stop and are taken up again later", len(runs),
                            exc=exc)
                for run in runs:
                    run.failed(exc)
                continue
            await publish_many([(done.conversation_id, done.events) for done in outcomes
                                if not isinstance(done, Exception)])
            for run, done in zip(runs, outcomes, strict=True):
                if isinstance(done, Exception):
                    run.failed(done)
                else:
                    run.completed(done)

    async def stop(self) -> None:
        """Ends the beat and drops every text still waiting; returns once the beat has ended."""
        task, self._task = self._task, None
        if self._wake is not None:
            self._wake.set()
        await _cancelled(task)
        for run in list(self._due.values()):
            run.close()
        self._due.clear()
        # The completions: a call already sent runs to its end in its thread (the run is then
        # completed, or taken up again once its lease lapses); nobody waits for it any more.
        completer, self._completer = self._completer, None
        await _cancelled(completer)
        for run in self._to_complete:
            run.close()
        self._to_complete.clear()


async def _cancelled(task: asyncio.Task | None) -> None:
    """Cancels `task` and returns once it has ended. A cancellation a library swallowed is seen
    at the task's next check; a task still inside a call is cancelled again."""
    if task is None:
        return
    task.cancel()
    pending = {task}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=STOP_RECANCEL_SECONDS)
        for still in pending:
            still.cancel()


def _complete_runs(completions: list[services.Completion]) -> list[services.Committed | Exception]:
    """`services.complete_runs`, looked up at each call (tests replace it), in the shared pool."""
    return services.complete_runs(completions)
