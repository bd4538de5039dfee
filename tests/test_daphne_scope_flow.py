"""Every WebSocket scope that Tether's daphne server (realtime/server/daphne_server.py) creates
carries its transport's backlog reader; an HTTP scope carries none (issue 25, item 7).

Without the reader, nothing bounds what a client that stops reading makes the node buffer
(realtime/connection/flow.py). Before this test only the end-to-end slow-consumer test
(tests/e2e/test_slow_consumer_daphne.py) noticed a `create_application` that stopped handing
the reader over; here a stub protocol stands in for daphne's, in process.

Importing daphne's server installs Twisted's asyncio reactor; nothing in this process runs it."""

from __future__ import annotations

import asyncio

import pytest

from realtime.connection.flow import SCOPE_KEY, TransportFlow, flow_of
from realtime.server.daphne_server import TetherServer

pytestmark = pytest.mark.pure


class StubTransport:
    """What TransportFlow reads of a Twisted TCP transport: its write buffers."""

    def __init__(self) -> None:
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class StubProtocol:
    def __init__(self) -> None:
        self.transport = StubTransport()


async def _scope_seen_by_the_application(scope: dict) -> tuple[dict, StubProtocol]:
    """Runs TetherServer.create_application for a stub protocol; returns the scope the
    application was called with."""
    seen: asyncio.Future = asyncio.get_running_loop().create_future()

    async def application(scope: dict, receive, send) -> None:
        seen.set_result(scope)

    server = TetherServer(application, endpoints=["tcp:port=0"], signal_handlers=False, close_handshake_timeout=5)
    protocol = StubProtocol()
    server.connections = {protocol: {}}  # what Server.run() and the protocol's connect set up
    assert server.create_application(protocol, scope) is not None
    got = await asyncio.wait_for(seen, 5)
    await server.connections[protocol]["application_instance"]
    return got, protocol


async def test_a_websocket_scope_carries_the_backlog_reader_of_its_own_transport():
    scope, protocol = await _scope_seen_by_the_application(
        {"type": "websocket", "path": "/ws/v1/", "extensions": {"websocket.http.response": {}}}
    )
    flow = flow_of(scope)
    assert isinstance(flow, TransportFlow)
    assert scope["extensions"]["websocket.http.response"] == {}  # daphne's own extensions kept

    # It reads this protocol's transport: unsent bytes are the buffer past the offset plus the
    # writes not yet joined into it.
    assert flow.unsent_bytes() == 0
    transport = protocol.transport
    transport.dataBuffer, transport.offset, transport._tempDataLen = b"x" * 1000, 200, 50  # noqa: SLF001 - Twisted's name
    assert flow.unsent_bytes() == 850
    flow.abort()
    assert protocol.transport.aborted


async def test_a_websocket_scope_without_extensions_gets_them():
    scope, _ = await _scope_seen_by_the_application({"type": "websocket", "path": "/ws/v1/"})
    assert isinstance(scope["extensions"][SCOPE_KEY], TransportFlow)


async def test_an_http_scope_carries_no_backlog_reader():
    scope, _ = await _scope_seen_by_the_application({"type": "http", "path": "/readyz", "method": "GET"})
    assert flow_of(scope) is None
