"""Daphne as Tether runs it: a lingering close, so a client whose frame is refused reads a
close frame (1009, or the application's 4413) instead of a reset.

Import only from `realtime.serve.main()`: importing daphne's server installs Twisted's
asyncio reactor, which must happen before anything else imports a reactor.

Why (issue 9, "oversized frames"): autobahn checks a message's size when the frame header
arrives, so a frame over daphne's `--websocket-max-message-size` is refused while the client
is still sending it. Autobahn's default, `failByDrop`, then aborts the TCP connection at once;
the kernel answers the unread rest of the frame with a reset, and the client sees 1006 with no
close frame, from which it cannot tell "your frame is too large, do not send it again" from
"the network failed, resend it". We measured 1006 for every frame from 2x to 20x the limit.

Rule: once the server has sent its close frame, it keeps reading whatever the client still
sends (the rest of the refused frame, frames sent before the client saw the close) until the
client answers with its close frame, for at most `close_handshake_timeout` seconds (a
lingering close, as nginx's `lingering_close`); a client still sending when the time is up is
reset. Memory stays bounded: autobahn throws away the payload of a refused message as it
arrives (after `failedByMe` nothing of a message is kept), so a socket lingering after a 1009
holds one read of the transport (Twisted reads 64 KiB at a time) whatever the client sends.
After the application's own close (4413 and the others), complete frames of up to daphne's
message size still reach the application, which ignores them once closed: no more than an open
socket may already send.
"""

from __future__ import annotations

import functools
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory

from realtime.connection.flow import SCOPE_KEY, TransportFlow


def configure_factory(factory: WebSocketFactory, close_handshake_timeout: float) -> None:
    """Close options on daphne's WebSocket factory. Daphne's own `setProtocolOptions` call
    (pings, sizes) does not touch these options."""
    factory.setProtocolOptions(
        # Send a close frame (1009 for a message over the size limit, 1002/1007 for protocol
        # violations) and linger, instead of aborting the TCP connection.
        failByDrop=False,
        # How long a close may linger before the connection is reset.
        closeHandshakeTimeout=close_handshake_timeout,
    )


class TetherServer(Server):
    """Daphne's Server; its WebSocket factory is configured as soon as `run()` creates it
    (before anything listens), and WebSocket scopes carry a backlog reader."""

    def __init__(self, *args: Any, close_handshake_timeout: float, **kwargs: Any) -> None:
        self.close_handshake_timeout = close_handshake_timeout
        super().__init__(*args, **kwargs)

    def create_application(self, protocol: Any, scope: dict) -> Any:
        """Every WebSocket scope carries its transport's backlog reader (realtime/connection/flow.py)."""
        if scope.get("type") == "websocket":
            scope["extensions"] = {**(scope.get("extensions") or {}), SCOPE_KEY: TransportFlow(protocol)}
        return super().create_application(protocol, scope)

    @property
    def ws_factory(self) -> WebSocketFactory:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: WebSocketFactory) -> None:
        configure_factory(factory, self.close_handshake_timeout)
        self._ws_factory = factory


class TetherCommandLineInterface(CommandLineInterface):
    """Daphne's command line, serving with TetherServer."""

    def __init__(self, close_handshake_timeout: float) -> None:
        super().__init__()
        self.server_class = functools.partial(TetherServer, close_handshake_timeout=close_handshake_timeout)
