"""Many callers, one database call: what arrives while a call is running goes into the next.

Why (issue 22): when 500 answers start together, each of them claimed its run and loaded its
context in database calls of its own: two thread hops and two statements per answer, 1,000 hops
and 1,000 statements for the burst, on a node whose loop was already the bottleneck. The same
work for many conversations is one statement (`unnest` of their ids); a `GroupCall` makes it one
call without making any caller wait for company:

- a caller alone is sent at once (nothing waits for a window, unlike the delta group commit);
- while a call is in flight, later callers gather, and go together in the next call, up to
  `max_batch` of them;
- at most one batch is in flight (split into at most `parallel` calls), so a burst costs a
  few calls, not one per caller.

What `fn` must do (the contract, as Django's `SessionBase` spells out its own): take the list of
items, run in a database thread (it is called through `db()`, within the deadline), and return
one outcome per item, in order: a value, or an exception instance for that item alone (it is
raised in that caller). An exception raised by `fn` itself fails every caller of the call.

A cancelled caller stops waiting at once; its item's call runs on (the thread cannot be
stopped), so whatever it took (a claim) is the caller's to find again: the run supervisor keeps
its pending claims listed for that (realtime/runs/supervisor.py). Used for a burst's posts
(`NodeRuntime.posts`) and claims (`RunSupervisor.claims`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from realtime.infra.db import db

Item = TypeVar("Item")
Result = TypeVar("Result")

# 500: the burst measured in docs/benchmarks.md fits in one call; a statement over 500 ids
# still takes milliseconds, so a bigger one would only hold the locks of its rows longer.
MAX_BATCH = 500


# Below this many items a call is never split: a thread hop and a statement of their own cost
# more than the rows they would take off the other call.
MIN_SPLIT = 50


class GroupCall(Generic[Item, Result]):
    """`parallel` above 1 splits a large call (at least 2 x MIN_SPLIT items) into that many
    calls run at once, in as many database threads and connections: when 500 answers started
    together, their claims were one statement of about 100 ms on one PostgreSQL backend while the
    node's loop waited and the other core was idle. `key` says which items must go in the same
    call (one conversation's messages: their order), each call getting whole keys; the split
    calls share no key, so they lock disjoint rows and cannot wait for each other."""

    def __init__(self, fn: Callable[[list[Item]], Sequence[Result | BaseException]], *,
                 max_batch: int = MAX_BATCH, executor: ThreadPoolExecutor | None = None,
                 parallel: int = 1, key: Callable[[Item], Hashable] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, not {parallel}")
        self.fn = fn
        self.max_batch = max_batch
        self.executor = executor
        self.parallel = parallel
        self.key = key
        self._waiting: list[tuple[Item, asyncio.Future]] = []
        self._runner: asyncio.Task | None = None
        self.calls = 0  # database calls made so far (tests and benchmarks read it)

    @property
    def waiting(self) -> int:
        """Callers waiting for the next call (not those of the call in flight)."""
        return len(self._waiting)

    async def __call__(self, item: Item) -> Result:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="group-call")
        return await future

    async def _run(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
            # A caller cancelled while waiting for its turn is not sent at all.
            batch = [(item, future) for item, future in batch if not future.done()]
            if not batch:
                continue
            try:
                parts = self._split(batch)
            except Exception as exc:  # noqa: BLE001 - a key that fails: its callers hear it, none waits forever
                self._fail(batch, exc)
                continue
            try:
                await asyncio.gather(*(self._send(part) for part in parts))
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise

    def _split(self, batch: list[tuple[Item, asyncio.Future]]) -> list[list[tuple[Item, asyncio.Future]]]:
        count = min(self.parallel, len(batch) // MIN_SPLIT)
        if count < 2:
            return [batch]
        parts: list[list[tuple[Item, asyncio.Future]]] = [[] for _ in range(count)]
        if self.key is None:
            for n, entry in enumerate(batch):
                parts[n % count].append(entry)
        else:
            # Whole keys to the part holding the fewest items so far, in order of arrival (a
            # key's items keep their order within its part).
            placed: dict[Hashable, int] = {}
            for entry in batch:
                k = self.key(entry[0])
                if k not in placed:
                    placed[k] = min(range(count), key=lambda i: len(parts[i]))
                parts[placed[k]].append(entry)
        return [part for part in parts if part]

    async def _send(self, batch: list[tuple[Item, asyncio.Future]]) -> None:
        self.calls += 1
        try:
            outcomes = await db(self.fn, executor=self.executor)([item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{self.fn!r} returned {len(outcomes)} outcomes for {len(batch)} items")
        except Exception as exc:  # noqa: BLE001 - every caller of the call sees it, raised in its own task
            self._fail(batch, exc)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    @staticmethod
    def _fail(batch: list[tuple[Item, asyncio.Future]], exc: BaseException) -> None:
        """Every caller of `batch` still waiting gets `exc`: a call that went wrong in any way
        leaves nobody waiting."""
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)
