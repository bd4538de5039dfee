"""A hole in the event log never crashes a socket (issue 9, item 4).

The log is gapless by construction, and the admin and the pruning no longer make holes; should
one appear anyway (an operator deleting rows in SQL), a socket reading across it closes with
`going_away` + 4012 instead of 1011, and the resume that follows answers `resumed:false`, so the
client reloads over REST instead of looping."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from realtime.node.resync import resync_once
from sessions_app import services
from sessions_app.models import Event
from tests.support.ws import WSClient, sequenced

pytestmark = pytest.mark.django_db(transaction=True)


async def conversation_with_a_hole(user, events: int = 6, hole: int = 3) -> str:
    def build():
        conversation = services.create_conversation(user.pk)
        for i in range(events):
            services.append_event(conversation.pk, "note", {"i": i})
        Event.objects.filter(conversation=conversation, seq=hole).delete()
        return str(conversation.pk)

    return await database_sync_to_async(build)()


async def test_a_replay_across_a_hole_is_refused_honestly(node_app, user, token):
    conversation_id = await conversation_with_a_hole(user)
    client = WSClient(node_app)
    ready = await client.connect(token, conversation_id=conversation_id, last_seq=1)
    assert (ready["resumed"], ready["replay_count"], ready["last_seq"]) == (False, 0, 6)
    await client.assert_silent()
    # Past the hole, resuming works as usual.
    await client.drop()
    past = WSClient(node_app)
    ready = await past.connect(token, conversation_id=conversation_id, last_seq=3)
    assert (ready["resumed"], ready["replay_count"]) == (True, 3)
    assert [f["seq"] for f in sequenced([await past.recv() for _ in range(3)])] == [4, 5, 6]
    await past.drop()


async def test_a_live_socket_reading_across_a_hole_closes_4012_and_resumes_to_a_reload(cluster, user, token):
    node, app = cluster("node-1")
    conversation_id = await conversation_with_a_hole(user, events=2, hole=99)
    client = WSClient(app)
    await client.connect(token, conversation_id=conversation_id, last_seq=2)

    def hole_behind_the_socket():
        services.append_event(conversation_id, "note", {"i": 3})
        services.append_event(conversation_id, "note", {"i": 4})
        Event.objects.filter(conversation_id=conversation_id, seq=3).delete()

    await database_sync_to_async(hole_behind_the_socket)()
    # Nothing was published for these: the resync finds them and the socket reads across the hole.
    await resync_once(node)
    frames, code = await client.expect_close()
    assert code == 4012
    assert frames[-1] == {"type": "error", "code": "going_away", "detail": "the event log has no seq 3; resume"}
    back = WSClient(app)
    ready = await back.connect(token, conversation_id=conversation_id, last_seq=2)
    assert (ready["resumed"], ready["last_seq"]) == (False, 4)
    await back.drop()
