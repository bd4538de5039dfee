"""SDK clients that keep talking while a test breaks the deployment under them.

The end-to-end deploy tests (rolling restart, Redis restart, the balancer) share one shape:
open chat sessions, keep each one conversing (a message, its whole answer, the next
message...), wait until every client was answered once, do the damage, then let every
conversation finish and compare each session's record with the database. `Talkers` is that
scaffolding; the damage and the checks stay in the test.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Sequence
from types import TracebackType

from tests.support.daphne_nodes import DaphneNode
from tests.support.sdk_chat import ChatSession
from tests.support.waiting import eventually


def sessions_across(a: DaphneNode, b: DaphneNode, tokens: Sequence[str], prefix: str) -> list[ChatSession]:
    """A session per token, named `prefix` and its number; half of them prefer node `a` and
    half `b` (each falls back on the other), so that both nodes carry streams when one is hit."""
    return [
        ChatSession.open([a.ws_url, b.ws_url] if i % 2 == 0 else [b.ws_url, a.ws_url], token, name=f"{prefix}{i:02d}")
        for i, token in enumerate(tokens)
    ]


class Talkers:
    """Keeps `sessions` conversing from `async with` until `finish()`; closes them on the way out.

    Session i sends `texts` in a cycle from `texts[i % len(texts)]` on, so that answers of
    different lengths are streaming at any moment. A conversation ends once `finish()` was
    called and it has sent at least `min_messages`; `timeout` bounds each single answer.
    A talker that failed (an answer that never came, a stopped client) fails the test at
    the next `check()`, `all_answered_once()` or `finish()`."""

    def __init__(
        self, sessions: Sequence[ChatSession], texts: Sequence[str], min_messages: int, timeout: float = 60.0
    ) -> None:
        self.sessions = list(sessions)
        self.texts = tuple(texts)
        self.min_messages = min_messages
        self.timeout = timeout
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def _texts_of(self, i: int) -> Iterator[str]:
        return itertools.islice(itertools.cycle(self.texts), i % len(self.texts), None)

    async def __aenter__(self) -> Talkers:
        self._tasks = [
            asyncio.create_task(
                s.converse_until(self._stop, self._texts_of(i), self.min_messages, self.timeout),
                name=f"talker-{s.name}",
            )
            for i, s in enumerate(self.sessions)
        ]
        return self

    def check(self) -> None:
        """Raises a talker's failure at once instead of at the end of the test."""
        for task in self._tasks:
            if task.done():
                task.result()

    async def all_answered_once(self, timeout: float = 30.0) -> None:
        """Waits until every session has had at least one whole answer."""

        async def answered():
            self.check()
            return all(s.completed_count() >= 1 for s in self.sessions)

        await eventually(answered, timeout=timeout, what="every client answered once")

    async def finish(self, timeout: float) -> None:
        """Lets every conversation end after its current answer (and `min_messages`), within `timeout`."""
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), timeout)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # On a failure the talkers are still running: stop them before closing their clients.
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in self.sessions))
