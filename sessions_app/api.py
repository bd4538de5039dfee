"""REST endpoints of the protocol (docs/protocol.md, "HTTP API")."""

from __future__ import annotations

import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_app import services
from sessions_app.models import Conversation, Event, Message


class ConversationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Conversation
        fields = ["id", "title", "created_at", "updated_at", "last_seq"]
        read_only_fields = ["id", "created_at", "updated_at", "last_seq"]


class MessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = ["id", "role", "text", "client_msg_id", "seq", "created_at"]


def owned_conversation(request: Request, conversation_id: str) -> Conversation:
    """Another user's conversation is indistinguishable from a missing one (404)."""
    return get_object_or_404(Conversation, pk=conversation_id, owner=request.user)


class ConversationList(generics.ListCreateAPIView):
    serializer_class = ConversationSerializer

    def get_queryset(self):
        return Conversation.objects.filter(owner=self.request.user).order_by("-updated_at")

    def perform_create(self, serializer: ConversationSerializer) -> None:
        serializer.instance = services.create_conversation(
            self.request.user.pk, serializer.validated_data.get("title", "")
        )


class ConversationDetail(generics.RetrieveAPIView):
    serializer_class = ConversationSerializer

    def get_object(self) -> Conversation:
        return owned_conversation(self.request, self.kwargs["conversation_id"])


class MessageList(generics.ListAPIView):
    serializer_class = MessageSerializer

    def get_queryset(self):
        conversation = owned_conversation(self.request, self.kwargs["conversation_id"])
        return Message.objects.filter(conversation=conversation).order_by("seq")


class EventList(generics.ListAPIView):
    """The reload path after `resumed:false`: the log's frames after `after_seq`, in order."""

    def get_queryset(self):
        conversation = owned_conversation(self.request, self.kwargs["conversation_id"])
        raw = self.request.query_params.get("after_seq", "0")
        if not raw.isdigit():
            raise ValidationError({"after_seq": "must be a non-negative integer"})
        return Event.objects.filter(conversation=conversation, seq__gt=int(raw)).order_by("seq")

    def list(self, request: Request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([event.as_frame() for event in page])


class NodeList(APIView):
    def get(self, request: Request) -> Response:
        from realtime.liveness import live_nodes

        try:
            nodes = async_to_sync(live_nodes)()
        except redis.RedisError as exc:
            return Response({"detail": f"node registry unavailable: {exc}"}, status=503)
        return Response({"nodes": [{"node": n.node, "ws_url": n.ws_url} for n in nodes]})


def healthz(request) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request) -> JsonResponse:
    """Ready to take sockets: not draining, database and Redis answering. The node is the one
    serving this request (realtime.routing puts it into the ASGI scope)."""
    failed = []
    node = request.scope.get("tether_node") if isinstance(request, ASGIRequest) else None
    if node is not None and node.draining:
        failed.append("draining")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # noqa: BLE001 - any database failure means not ready
        failed.append("database")
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        client.ping()
        client.close()
    except redis.RedisError:
        failed.append("redis")
    if failed:
        return JsonResponse({"status": "unavailable", "failed": failed}, status=503)
    return JsonResponse({"status": "ready"})
