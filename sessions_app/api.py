"""REST endpoints of the protocol (docs/protocol.md, "HTTP API"). Every DRF view here is
described for drf-spectacular: the schema at /api/schema/ is committed as docs/openapi.yaml and
a test keeps the two equal."""

from __future__ import annotations

import logging

import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from project.csp import allow_own_inline
from realtime.infra.db import bounded
from realtime.infra.outage import DATABASE
from sessions_app import (
    openapi,  # noqa: F401 - registers its drf-spectacular extensions
    services,
)
from sessions_app.models import Conversation, Event, Message
from sessions_app.pagination import strict_int
from sessions_app.throttles import (
    ConversationCreateThrottle,
    RefreshPerAddressThrottle,
    TokenPerAddressThrottle,
    TokenPerUsernameThrottle,
)

log = logging.getLogger(__name__)


class ConversationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Conversation
        fields = ["id", "title", "created_at", "updated_at", "last_seq"]
        read_only_fields = ["id", "created_at", "updated_at", "last_seq"]


class MessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = ["id", "role", "text", "client_msg_id", "seq", "created_at"]


class EventFrameSerializer(serializers.Serializer):
    """One frame of the log, exactly as the socket sends it: `type` and `seq`, then the
    fields of that type (docs/protocol.md; docs/asyncapi.yaml describes each type)."""

    type = serializers.CharField(help_text="message.created, agent.started, agent.delta, agent.completed, agent.failed")
    seq = serializers.IntegerField(min_value=1)

    class Meta:
        # The remaining fields depend on `type`.
        ref_name = "EventFrame"


class NodeSerializer(serializers.Serializer):
    node = serializers.CharField(help_text="the node id (ready.node)")
    ws_url = serializers.CharField(help_text="the WebSocket URL clients should use for this node")


class SwaggerUI(SpectacularSwaggerSplitView):
    """Swagger UI at /api/docs/ under the Content-Security-Policy: its script from a URL of its
    own, its page (template and settings only) with its inline style allowed by hash."""

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if request.GET.get("script") is not None or response.status_code != 200:
            return response
        return allow_own_inline(response)  # renders it: the hashes are of what is sent


class ThrottledTokenObtainPairView(TokenObtainPairView):
    """`POST /api/auth/token/`, limited per client address and per username."""

    throttle_classes = [TokenPerAddressThrottle, TokenPerUsernameThrottle]


class ThrottledTokenRefreshView(TokenRefreshView):
    """Rotates a refresh token: a new access token and a new refresh token; the one sent is
    used up. A used refresh token presented again after REFRESH_TOKEN_REUSE_GRACE ends its
    whole sign-in; no sign-in is refreshed past SIGN_IN_MAX_AGE. Limited per client address."""

    throttle_classes = [RefreshPerAddressThrottle]


def owned_conversation(request: Request, conversation_id: str) -> Conversation:
    """Another user's conversation is indistinguishable from a missing one (404)."""
    return get_object_or_404(Conversation, pk=conversation_id, owner=request.user)


class ConversationList(generics.ListCreateAPIView):
    """The user's conversations, newest activity first; POST creates one (limited per user)."""

    serializer_class = ConversationSerializer
    throttle_classes = [ConversationCreateThrottle]

    def get_queryset(self):
        return Conversation.objects.filter(owner=self.request.user).order_by("-updated_at")

    def perform_create(self, serializer: ConversationSerializer) -> None:
        serializer.instance = services.create_conversation(
            self.request.user.pk, serializer.validated_data.get("title", "")
        )


class ConversationDetail(generics.RetrieveAPIView):
    """One of the user's conversations; `last_seq` is where its event log stands."""

    serializer_class = ConversationSerializer

    def get_object(self) -> Conversation:
        return owned_conversation(self.request, self.kwargs["conversation_id"])


class MessageList(generics.ListAPIView):
    """The conversation's user and assistant messages, oldest first (completed answers only)."""

    serializer_class = MessageSerializer

    def get_queryset(self):
        conversation = owned_conversation(self.request, self.kwargs["conversation_id"])
        return Message.objects.filter(conversation=conversation).order_by("seq")


@extend_schema(
    parameters=[
        OpenApiParameter(
            "after_seq", OpenApiTypes.INT, OpenApiParameter.QUERY,
            description="only events with a larger seq (default 0: the whole retained log)",
        )
    ],
)
class EventList(generics.ListAPIView):
    """The reload path after `resumed:false`: the log's frames after `after_seq`, in order."""

    serializer_class = EventFrameSerializer

    def get_queryset(self):
        conversation = owned_conversation(self.request, self.kwargs["conversation_id"])
        after_seq = strict_int(self.request.query_params.get("after_seq", "0"), "after_seq")
        return Event.objects.filter(conversation=conversation, seq__gt=after_seq).order_by("seq")

    def list(self, request: Request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([event.as_frame() for event in page])


class NodeList(APIView):
    """Discovery: the live nodes that take new sockets (draining nodes are left out)."""

    @extend_schema(
        responses={
            200: inline_serializer("NodeListResponse", {"nodes": NodeSerializer(many=True)}),
            503: OpenApiResponse(
                inline_serializer("NodeRegistryUnavailable", {"detail": serializers.CharField()}),
                description="the node registry (Redis) is unreachable",
            ),
        },
    )
    def get(self, request: Request) -> Response:
        from realtime.infra.registry import live_nodes

        try:
            nodes = async_to_sync(live_nodes)()
        except redis.RedisError as exc:
            # The client learns that discovery is down, not Redis' address or its words.
            log.warning("node registry unavailable for discovery: %s", exc)
            return Response({"detail": "node registry unavailable; retry shortly"}, status=503)
        return Response({"nodes": [{"node": n.node, "ws_url": n.ws_url} for n in nodes]})


def not_found(request, exception=None):
    """Django's 404 page, except under /api/, where clients expect the API's JSON error."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def healthz(request) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request) -> JsonResponse:
    """Ready to take sockets: not draining, database and Redis answering. The node is the one
    serving this request (realtime.server.routing puts it into the ASGI scope)."""
    failed = []
    node = request.scope.get("tether_node") if isinstance(request, ASGIRequest) else None
    if node is not None and node.draining:
        failed.append("draining")
    if not _database_answers():
        failed.append("database")
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        client.ping()
        client.close()
    except redis.RedisError:
        failed.append("redis")
    if failed:
        response = JsonResponse({"status": "unavailable", "failed": failed}, status=503)
        # An answer, not a server error: without this Django logs an ERROR line per probe for
        # as long as a dependency is out (django.utils.log.log_response skips logged responses).
        response._has_been_logged = True  # noqa: SLF001 - Django's own flag
        return response
    return JsonResponse({"status": "ready"})


def _select_one() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _database_answers() -> bool:
    """The database answers `SELECT 1` within REALTIME_DB_TIMEOUT (realtime/infra/db.py cuts a
    call that waits longer). While it is known to be out and another call of this process is
    already trying it, no: a probe must not queue behind it (realtime/infra/outage.py)."""
    with DATABASE.admit() as admitted:
        if not admitted:
            return False
        try:
            bounded(_select_one)()
        except Exception as exc:  # noqa: BLE001 - any database failure means not ready
            DATABASE.failed(exc)
            return False
    DATABASE.succeeded()
    return True
