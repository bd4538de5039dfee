"""Forced interleavings: a gate holds a call at a chosen point until the test opens it, and the
test can wait until the call has arrived there. Sync calls (database threads) and async calls
(the event loop) both wait on threading events, so one gate serves either."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

HOLD_LIMIT = 20.0  # a gate never holds forever: a broken test fails instead of hanging


class Gate:
    def __init__(self) -> None:
        self._arrived = threading.Event()
        self._opened = threading.Event()
        # Set by the caller once the held call returned (see `passed`).
        self._passed = threading.Event()

    def hold(self) -> None:
        """Inside a sync call: announce arrival, wait for the test."""
        self._arrived.set()
        if not self._opened.wait(HOLD_LIMIT):
            raise TimeoutError("gate never opened")

    async def hold_async(self) -> None:
        self._arrived.set()
        if not await asyncio.to_thread(self._opened.wait, HOLD_LIMIT):
            raise TimeoutError("gate never opened")

    async def arrived(self, timeout: float = 10) -> None:
        if not await asyncio.to_thread(self._arrived.wait, timeout):
            raise AssertionError("the call never reached the gate")

    def open(self) -> None:
        self._opened.set()

    def mark_passed(self) -> None:
        self._passed.set()

    @property
    def passed(self) -> bool:
        """The held call has ended (see `around`)."""
        return self._passed.is_set()

    def around(self, call: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        """`call`, held at this gate first; `passed` once it ended, however it ended: returned,
        raised, or cancelled, inside the call or while still held at the gate (a caller that
        gives up on a held call cancels it there, and that call has ended too)."""

        async def held(*args: Any, **kwargs: Any) -> T:
            try:
                await self.hold_async()
                return await call(*args, **kwargs)
            finally:
                self.mark_passed()

        return held

    def around_sync(self, call: Callable[..., T]) -> Callable[..., T]:
        """`around` for a sync call (one that runs in a database thread)."""

        def held(*args: Any, **kwargs: Any) -> T:
            try:
                self.hold()
                return call(*args, **kwargs)
            finally:
                self.mark_passed()

        return held

    def before(self, call: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        """`call`, held at this gate first (for monkeypatching an async function)."""

        async def held(*args: Any, **kwargs: Any) -> T:
            await self.hold_async()
            return await call(*args, **kwargs)

        return held


class FirstCallGate:
    """A service that takes a list (a `GroupCall`'s function) replaced by one that records each
    call's number of items and holds the first call at a `Gate` until `open()`: the callers that
    arrive meanwhile gather for the next call."""

    def __init__(self, monkeypatch: Any, owner: Any, name: str) -> None:
        self.batches: list[int] = []
        self.gate = Gate()
        real = getattr(owner, name)

        def gated(items: list) -> Any:
            self.batches.append(len(items))
            if len(self.batches) == 1:
                self.gate.hold()
            return real(items)

        monkeypatch.setattr(owner, name, gated)

    async def entered(self) -> None:
        """Returns once the first call is being made (and held)."""
        await self.gate.arrived()

    def open(self) -> None:
        self.gate.open()
