"""Property test against a live consumer (not only the parser): random and mutated frames on
a connected socket get documented error frames, never crash the consumer (no 1011, no close
other than the documented budget closes) and never write anything."""

import json
import uuid

import pytest
from channels.db import database_sync_to_async
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.core import protocol as p
from sessions_app.models import AgentRun, Connection, Event, Message
from tests.support.ws import Closed, WSClient
from tests.test_protocol_unit import frames, json_values

pytestmark = pytest.mark.django_db(transaction=True)

DOCUMENTED_ERRORS = {"bad_frame", "too_long", "frame_too_large", "rate_limited", "not_found"}
DOCUMENTED_CLOSES = {4400, 4413, 4429}


def _invalid(raw: str) -> bool:
    try:
        p.parse_frame(p.decode_frame(raw, None, 65536), 1000)
    except p.ProtocolError:
        return True
    return False


def _mutations(valid: dict) -> st.SearchStrategy[str]:
    """A valid frame with one field dropped, retyped or replaced by junk."""
    keys = st.sampled_from(sorted(valid))
    return st.one_of(
        keys.map(lambda k: json.dumps({kk: v for kk, v in valid.items() if kk != k})),
        st.tuples(keys, json_values).map(lambda kv: json.dumps({**valid, kv[0]: kv[1]})),
        st.text(max_size=60).map(lambda junk: json.dumps(valid)[: len(junk) % 40] + junk),
    )


VALID = [
    {"type": "message", "client_msg_id": str(uuid.uuid4()), "text": "hi"},
    {"type": "ack", "seq": 1},
    {"type": "cancel", "run_id": str(uuid.uuid4())},
    {"type": "auth.refresh", "access": "x"},
    {"type": "approval.respond", "call_id": str(uuid.uuid4()), "decision": "approve"},
]
hostile = st.one_of(st.text(max_size=120), frames.map(json.dumps), *(_mutations(v) for v in VALID)).filter(
    lambda raw: raw != "" and _invalid(raw)  # the test communicator cannot send an empty text frame
)


def _counts() -> tuple[int, int, int, int]:
    return (
        Message.objects.count(),
        Event.objects.count(),
        AgentRun.objects.count(),
        Connection.objects.filter(closed_at__isnull=True).count(),
    )


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
@given(batch=st.lists(hostile, min_size=1, max_size=15))
async def test_hostile_frames_get_documented_errors_and_write_nothing(batch, node_app, token, settings):
    settings.REALTIME_BAD_FRAME_LIMIT = 1000  # keep the socket open to see every answer
    settings.REALTIME_RATE_CONNECT_USER = (100_000, 60)  # one connection per example
    settings.REALTIME_RATE_NEW_CONVERSATIONS_USER = (100_000, 60)  # each starts a conversation
    client = WSClient(node_app)
    await client.connect(token)
    before = await database_sync_to_async(_counts)()
    for raw in batch:
        await client.send(raw)
    await client.send({"type": "ping", "id": "end"})
    replies = []
    try:
        while True:
            frame = await client.recv(timeout=5)
            if frame == {"type": "pong", "id": "end"}:
                break
            replies.append(frame)
    except Closed as closed:
        assert closed.code in DOCUMENTED_CLOSES, (closed.code, batch)
    assert all(r["type"] == "error" and r["code"] in DOCUMENTED_ERRORS for r in replies), replies
    if client.close_code is None:
        assert len(replies) == len(batch), (replies, batch)
    assert await database_sync_to_async(_counts)() == before
    await client.drop()
