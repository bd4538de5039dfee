"""A wake-up flag for one waiting task: `asyncio.Event` without its deque of waiters.

Every socket has two (its sender's and its watchdog's), each waited on by one task only. We
found an `asyncio.Event` cost 720 bytes per socket for its waiters' deque alone (tracemalloc,
`bench/idle_bench.py`, issue 12); this holds a future only while its task waits.

Rule: at most one task waits on a Wake at a time (a second waiter raises RuntimeError).
"""

from __future__ import annotations

import asyncio


class Wake:
    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False  # set() was called since the last clear()
        self._waiter: asyncio.Future | None = None  # the waiting task's future, while it waits

    def set(self) -> None:
        self._flag = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    @property
    def waiting(self) -> bool:
        """A task waits on it now (it holds a future only then)."""
        return self._waiter is not None

    async def wait(self) -> None:
        """Returns once the flag is set (at once if it is)."""
        if self._flag:
            return
        if self._waiter is not None:
            raise RuntimeError("a Wake has one waiter; use asyncio.Event for several")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
