"""ASGI wiring: one application per node (tests build several to simulate a cluster)."""

from __future__ import annotations

from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import WebsocketDenier
from django.urls import path, re_path

from realtime.consumers import ConversationConsumer
from realtime.node import NodeRuntime
from realtime.origin import OriginCheckMiddleware


class NodeScopeMiddleware:
    """Puts the node runtime into the scope and starts its background work lazily."""

    def __init__(self, app, node: NodeRuntime):
        self.app = app
        self.node = node

    async def __call__(self, scope, receive, send):
        self.node.ensure_started()
        return await self.app(dict(scope, tether_node=self.node), receive, send)


def build_websocket_app(node: NodeRuntime):
    routes = URLRouter(
        [
            path("ws/v1/", ConversationConsumer.as_asgi()),
            re_path(r"^.*$", WebsocketDenier.as_asgi()),
        ]
    )
    return OriginCheckMiddleware(NodeScopeMiddleware(routes, node))


def build_application(http_app, node: NodeRuntime) -> ProtocolTypeRouter:
    return ProtocolTypeRouter({"http": NodeScopeMiddleware(http_app, node), "websocket": build_websocket_app(node)})
