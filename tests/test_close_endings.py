"""How each close ends the TCP connection (issue 25, item 2; realtime/core/closes.py,
realtime/connection/flow.py).

Three endings: the close handshake with daphne's linger (the default: a live client answers,
one still sending a refused frame is read until it does), `drop` (the close frame leaves, then
FIN at once: a peer silent for a whole heartbeat timeout will not answer) and `abort` (reset at
once: a peer that does not read would not read the close frame either). End to end:
tests/e2e/test_zombie_dropped_at_once.py and tests/e2e/test_oversized_frames_daphne.py."""

from __future__ import annotations

import asyncio

import pytest

from realtime.connection.flow import TransportFlow
from realtime.core import closes
from tests.support.waiting import eventually

pytestmark = pytest.mark.pure


class StubTransport:
    def __init__(self) -> None:
        self.connected = True
        self.calls: list[str] = []

    def loseConnection(self) -> None:
        self.calls.append("lose")

    def abortConnection(self) -> None:
        self.calls.append("abort")
        self.connected = False


class StubProtocol:
    def __init__(self) -> None:
        self.transport = StubTransport()


def _reasons() -> dict[str, closes.CloseReason]:
    return {name: value for name, value in vars(closes).items() if isinstance(value, closes.CloseReason)}


def test_only_the_heartbeat_timeout_drops_and_only_a_slow_consumer_aborts():
    endings = {name: (reason.drop, reason.abort) for name, reason in _reasons().items()}
    assert endings.pop("HEARTBEAT_TIMEOUT") == (True, False)
    assert endings.pop("SLOW_CONSUMER") == (False, True)
    # Every other close waits for the client's close frame: the client is alive and reads.
    assert set(endings.values()) == {(False, False)}, endings
    assert all(not (r.drop and r.abort) for r in _reasons().values())


async def test_drop_closes_after_what_was_written_and_leaves_a_closed_transport_alone():
    protocol = StubProtocol()
    TransportFlow(protocol).drop(flush_within=0.05)
    assert protocol.transport.calls == ["lose"]
    protocol.transport.connected = False  # Twisted flushed, sent FIN and lost the connection

    # The loop runs timers in deadline order: this one fires after the drop's own.
    loop = asyncio.get_running_loop()
    grace_over = loop.create_future()
    loop.call_later(0.06, grace_over.set_result, None)
    await grace_over
    assert protocol.transport.calls == ["lose"]


async def test_drop_resets_a_connection_whose_buffer_does_not_leave():
    protocol = StubProtocol()  # stays connected: a peer that does not read holds the buffer
    TransportFlow(protocol).drop(flush_within=0.05)

    async def aborted() -> bool:
        return protocol.transport.calls == ["lose", "abort"]

    await eventually(aborted, timeout=2, what="the reset after the grace")


def test_drop_without_a_transport_does_nothing():
    class Gone:
        transport = None

    TransportFlow(Gone()).drop()
