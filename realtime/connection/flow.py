"""What a socket's transport still holds unsent: the sender's backpressure (issue 9, item 10).

ASGI has no flow control for WebSocket sends: daphne writes every frame the application sends
into the Twisted transport at once, and the transport keeps in memory whatever the peer does not
read. We found a client that never read a long replay made its node buffer the whole replay.
So the daphne server Tether runs (realtime/server/daphne_server.py) puts a `TransportFlow` into each
WebSocket scope (`scope["extensions"]["tether.flow"]`); the consumer's sender asks it before
every event and waits (or gives up, closing the socket) when the backlog is over the bound.
In-process tests (Channels' communicator) have no transport and no flow: nothing is paced."""

from __future__ import annotations

import asyncio
from typing import Any

SCOPE_KEY = "tether.flow"
# `drop`: how long what was written may take to leave before the connection is reset instead.
# A peer that does not read keeps it in the node's buffers; one that reads takes milliseconds.
DROP_FLUSH_SECONDS = 1.0


class TransportFlow:
    """Reads the backlog of one daphne WebSocket protocol's transport (Twisted's TCP transport:
    the asyncio reactor keeps Twisted's own buffers). Only call from the event loop."""

    def __init__(self, protocol: Any):
        self._protocol = protocol

    def unsent_bytes(self) -> int:
        transport = getattr(self._protocol, "transport", None)
        if transport is None:
            return 0
        # Twisted's FileDescriptor: dataBuffer[offset:] plus the writes not yet joined into it.
        buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
        return max(0, buffered) + getattr(transport, "_tempDataLen", 0)

    def abort(self) -> None:
        """Drops the TCP connection now, buffer and all (a peer that does not read would never
        read a close frame either)."""
        transport = getattr(self._protocol, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def drop(self, flush_within: float = DROP_FLUSH_SECONDS) -> None:
        """Closes the TCP connection once what was written has left (FIN), without waiting for
        the peer's close frame; resets it if that has not happened within `flush_within`
        seconds (Twisted would otherwise wait for a peer that does not read for as long as the
        kernel keeps retrying)."""
        transport = getattr(self._protocol, "transport", None)
        if transport is None:
            return
        transport.loseConnection()
        asyncio.get_running_loop().call_later(flush_within, _abort_if_connected, transport)


def _abort_if_connected(transport: Any) -> None:
    if getattr(transport, "connected", False):
        transport.abortConnection()


def flow_of(scope: dict) -> TransportFlow | None:
    return (scope.get("extensions") or {}).get(SCOPE_KEY)
