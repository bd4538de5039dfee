"""ASGI wiring: one application per node (tests build several to simulate a cluster)."""

from __future__ import annotations

from channels.routing import ProtocolTypeRouter
from channels.security.websocket import WebsocketDenier

from realtime.connection.consumer import ConversationConsumer
from realtime.connection.origin import host_of, origin_allowed, origin_of
from realtime.node.runtime import NodeRuntime

# The one WebSocket endpoint (docs/protocol.md); any other path is refused at the handshake.
WEBSOCKET_PATH = "/ws/v1/"


class NodeScopeMiddleware:
    """Puts the node runtime into the scope (for the HTTP views) and starts its background
    work lazily."""

    def __init__(self, app, node: NodeRuntime):
        self.app = app
        self.node = node

    async def __call__(self, scope, receive, send):
        self.node.ensure_started()
        return await self.app(dict(scope, tether_node=self.node), receive, send)


def build_websocket_app(node: NodeRuntime):
    """The WebSocket side: the origin check and the one route in a single frame.

    Not Channels' URLRouter behind two middlewares: each layer stays suspended for the
    socket's whole life with its own copy of the scope, and we measured them at about 1.5 KB
    per idle socket (tracemalloc, issue 12). The node reaches the consumer as a constructor
    argument instead of through a copied scope."""
    consumer = ConversationConsumer.as_asgi(node=node)
    denier = WebsocketDenier.as_asgi()

    async def websocket_app(scope, receive, send):
        if scope["path"] != WEBSOCKET_PATH or not origin_allowed(origin_of(scope), host_of(scope)):
            return await denier(scope, receive, send)
        node.ensure_started()
        return await consumer(scope, receive, send)

    return websocket_app


def build_application(http_app, node: NodeRuntime) -> ProtocolTypeRouter:
    return ProtocolTypeRouter({"http": NodeScopeMiddleware(http_app, node), "websocket": build_websocket_app(node)})
