"""`GroupCall` (realtime/infra/group_call.py): callers that arrive while a call is in flight share
the next one; a caller alone is not kept waiting; each caller gets its own item's outcome; a
large call is split into calls at once that share no key."""

from __future__ import annotations

import asyncio
import threading

import pytest

from realtime.infra.group_call import GroupCall
from tests.support.waiting import eventually


class Recorder:
    """A database function that records its batches; the first call is held until `release()`."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        self.entered.set()
        if len(self.batches) == 1:
            assert self.gate.wait(5), "the test never released the first call"
        return [ValueError(f"bad {item}") if item < 0 else item * 10 for item in items]


async def behind_a_held_call(group: GroupCall, recorder: Recorder, first: int, later: list[int]) -> list:
    """`first` sent and held in its database thread; `later` arrive meanwhile. Returns every
    caller's future, first's first; the test releases the held call (`recorder.gate.set()`)."""
    futures = [asyncio.ensure_future(group(first))]
    await asyncio.get_running_loop().run_in_executor(None, recorder.entered.wait, 5)
    futures += [asyncio.ensure_future(group(n)) for n in later]
    await eventually(lambda: group.waiting == len(later), timeout=5, what="the later callers waiting")
    return futures


async def batches_of(later: list[int], **options) -> list[list]:
    """The calls a `GroupCall(**options)` makes for `later` callers arriving behind a held call of 0."""
    recorder = Recorder()
    group = GroupCall(recorder, **options)
    futures = await behind_a_held_call(group, recorder, 0, later)
    recorder.gate.set()
    await asyncio.gather(*futures)
    return recorder.batches


async def test_a_caller_alone_is_sent_at_once_in_a_call_of_its_own():
    recorder = Recorder()
    recorder.gate.set()
    group = GroupCall(recorder)
    assert await group(3) == 30
    assert await group(4) == 40
    assert recorder.batches == [[3], [4]]


async def test_callers_arriving_while_a_call_is_in_flight_share_the_next_call():
    recorder = Recorder()
    group = GroupCall(recorder)
    futures = await behind_a_held_call(group, recorder, 1, list(range(2, 12)))
    recorder.gate.set()
    assert await asyncio.gather(*futures) == [n * 10 for n in range(1, 12)]
    assert recorder.batches == [[1], list(range(2, 12))]
    assert group.calls == 2


async def test_a_batch_holds_at_most_max_batch_items_and_the_rest_go_next():
    assert await batches_of(list(range(1, 10)), max_batch=4) == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]


async def test_an_items_own_failure_is_raised_in_its_caller_only():
    recorder = Recorder()
    group = GroupCall(recorder)
    first, good, bad = await behind_a_held_call(group, recorder, 1, [2, -2])
    recorder.gate.set()
    assert await first == 10
    assert await good == 20
    with pytest.raises(ValueError, match="bad -2"):
        await bad


async def test_a_call_that_fails_as_a_whole_fails_each_of_its_callers_and_the_next_call_is_made():
    calls = []

    def broken(items: list) -> list:
        calls.append(list(items))
        if len(calls) == 1:
            raise ConnectionError("database gone")
        return items

    group = GroupCall(broken)
    with pytest.raises(ConnectionError, match="database gone"):
        await group(1)
    assert await group(2) == 2
    assert calls == [[1], [2]]


async def test_a_function_that_returns_the_wrong_number_of_outcomes_fails_its_callers():
    group = GroupCall(lambda items: items[:-1])
    with pytest.raises(RuntimeError, match="returned 0 outcomes for 1 items"):
        await group(1)


async def test_a_function_that_returns_no_list_fails_its_callers_and_leaves_nobody_waiting():
    group = GroupCall(lambda items: None)
    with pytest.raises(TypeError):
        await asyncio.wait_for(group(1), 5)
    assert group.waiting == 0


async def test_a_key_that_fails_fails_its_batch_and_the_next_batch_is_sent():
    recorder = Recorder()
    group = GroupCall(recorder, parallel=2, key=lambda item: 1 // (item - 50))  # item 50: ZeroDivisionError
    futures = await behind_a_held_call(group, recorder, 0, list(range(1, 120)))
    recorder.gate.set()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] == 0
    assert all(isinstance(r, ZeroDivisionError) for r in results[1:])
    assert await asyncio.wait_for(group(7), 5) == 70  # the group still works


async def test_a_caller_cancelled_before_its_turn_is_not_sent_and_the_others_are():
    recorder = Recorder()
    group = GroupCall(recorder)
    first, gone, kept = await behind_a_held_call(group, recorder, 1, [2, 3])
    gone.cancel()
    recorder.gate.set()
    assert await first == 10
    assert await kept == 30
    assert recorder.batches == [[1], [3]]


def test_sizes_below_one_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        GroupCall(lambda items: items, max_batch=0)
    with pytest.raises(ValueError, match="parallel must be at least 1"):
        GroupCall(lambda items: items, parallel=0)


async def test_a_large_call_is_split_into_parallel_calls_that_share_no_key():
    recorder = Recorder()
    group = GroupCall(recorder, parallel=2, key=lambda item: item % 7)
    futures = await behind_a_held_call(group, recorder, 0, list(range(1, 301)))
    recorder.gate.set()
    assert await asyncio.gather(*futures) == [n * 10 for n in range(301)]
    first_call, *split = recorder.batches
    assert first_call == [0]
    assert len(split) == 2
    assert sorted(split[0] + split[1]) == list(range(1, 301))
    assert not {n % 7 for n in split[0]} & {n % 7 for n in split[1]}  # each key in one call
    assert all(part == sorted(part) for part in split)  # a key's items in their order


async def test_a_call_below_twice_the_split_size_is_not_split():
    assert await batches_of(list(range(1, 100)), parallel=4) == [[0], list(range(1, 100))]
