"""Path 3: what happens while a client is away is queued durably and delivered on
reconnect, in seq order, exactly once; resends are idempotent; acks are respected."""

import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.utils import timezone

from realtime.fanout.publish import publish
from sessions_app import services
from sessions_app.models import AgentRun, Connection, Conversation, Event, Message
from tests.support.waiting import eventually_sync
from tests.support.ws import WSClient, assert_gapless, run_text, sequenced

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_agent")]


async def test_events_while_away_arrive_once_in_order(cluster, token):
    _, app1 = cluster("node-1")
    _, app2 = cluster("node-2")
    away = WSClient(app1)
    ready = await away.connect(token)
    conversation_id = ready["conversation_id"]
    frames = await away.converse("before")
    applied = frames[-1]["seq"]
    await away.drop()

    # Another device of the same user converses meanwhile, through another node...
    other = WSClient(app2)
    await other.connect(token, conversation_id=conversation_id, last_seq=applied)
    await other.converse("from my phone")
    await other.drop()
    # ...and the server appends on its own (an integration, an operator).
    event = await database_sync_to_async(services.append_event)(
        conversation_id, "message.created", {"message": {"id": str(uuid.uuid4()), "role": "assistant", "text": "ping"}}
    )
    await publish(conversation_id, [event.as_frame()])
    last = await database_sync_to_async(services.conversation_last_seq)(conversation_id)

    back = WSClient(app1)
    ready = await back.connect(token, conversation_id=conversation_id, last_seq=applied)
    assert (ready["resumed"], ready["replay_count"], ready["last_seq"]) == (True, last - applied, last)
    replay = [await back.recv() for _ in range(ready["replay_count"])]
    assert_gapless(replay, after=applied)
    logged = await database_sync_to_async(services.events_after)(conversation_id, applied)
    assert replay == logged
    assert replay[-1]["message"]["text"] == "ping"
    # Then live events follow with no gap and no duplicate.
    live = await back.converse("I am back")
    assert_gapless(replay + live, after=applied)
    await back.drop()


async def test_resent_message_is_acknowledged_as_duplicate(node_app, token):
    first = WSClient(node_app)
    ready = await first.connect(token)
    msg_id = await first.message("exactly once please")
    frames = await first.recv_until(lambda f: f["type"] == "agent.completed")
    ack = next(f for f in frames if f["type"] == "message.ack")
    assert ack == {"type": "message.ack", "client_msg_id": msg_id, "seq": 1, "duplicate": False}
    await first.drop()

    # The client never saw the ack (socket died): it resends after reconnecting.
    again = WSClient(node_app)
    await again.connect(token, conversation_id=ready["conversation_id"], last_seq=0)
    replay = [await again.recv() for _ in range(len(sequenced(frames)))]
    await again.message("exactly once please", client_msg_id=msg_id)
    assert await again.recv() == {"type": "message.ack", "client_msg_id": msg_id, "seq": 1, "duplicate": True}
    await again.assert_silent()
    assert replay == sequenced(frames)
    await again.drop()
    assert await database_sync_to_async(Message.objects.filter(role="user").count)() == 1
    assert await database_sync_to_async(AgentRun.objects.count)() == 1


async def test_acknowledged_events_are_not_sent_again(node_app, token):
    c = WSClient(node_app)
    ready = await c.connect(token)
    frames = await c.converse("one")
    acked = frames[-1]["seq"]
    await c.send({"type": "ack", "seq": acked})
    await c.send({"type": "ping", "id": "sync"})  # frames are handled in order: the ack is stored
    assert await c.recv() == {"type": "pong", "id": "sync"}
    more = await c.converse("two")
    await c.drop()
    conversation = await database_sync_to_async(Conversation.objects.get)(pk=ready["conversation_id"])
    assert conversation.acked_seq == acked

    back = WSClient(node_app)
    ready = await back.connect(token, conversation_id=ready["conversation_id"], last_seq=acked)
    replay = [await back.recv() for _ in range(ready["replay_count"])]
    assert replay == sequenced(more) and min(f["seq"] for f in replay) == acked + 1
    await back.assert_silent()
    await back.drop()


async def test_ack_beyond_the_log_is_clamped(node_app, token):
    c = WSClient(node_app)
    ready = await c.connect(token)
    await c.send({"type": "ack", "seq": 10_000})
    await c.send({"type": "ping", "id": 1})
    await c.recv()
    await c.drop()
    conversation = await database_sync_to_async(Conversation.objects.get)(pk=ready["conversation_id"])
    assert conversation.acked_seq == 0


async def test_events_committed_during_replay_arrive_exactly_once(settings, cluster, token):
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 5
    settings.REALTIME_REPLAY_BATCH = 7  # many small replay queries: more room for interleaving
    _, app = cluster("node-1")
    c = WSClient(app)
    ready = await c.connect(token)
    await c.message("count 200")
    early = await c.recv_until(lambda f: f["type"] == "agent.delta" and f["index"] >= 5)
    await c.drop()
    back = WSClient(app)
    await back.connect(token, conversation_id=ready["conversation_id"], last_seq=2)
    rest = await back.recv_until(lambda f: f["type"] == "agent.completed", timeout=30)
    run_id = next(f for f in early if f["type"] == "agent.started")["run_id"]
    assert_gapless(rest, after=2)
    text = run_text(rest, run_id)
    assert text == rest[-1]["message"]["text"] == " ".join(f"w{i}" for i in range(1, 201))
    await back.drop()


async def test_pruned_log_gives_resumed_false_and_rest_reload_point(node_app, token):
    c = WSClient(node_app)
    ready = await c.connect(token)
    frames = await c.converse("old news")
    await c.drop()
    conversation_id = ready["conversation_id"]

    def age_and_prune():
        Event.objects.filter(conversation_id=conversation_id).update(created_at=timezone.now() - timedelta(days=60))
        return services.prune_events()

    result = await database_sync_to_async(age_and_prune)()
    assert result.unacked_deleted == len(sequenced(frames))
    back = WSClient(node_app)
    ready = await back.connect(token, conversation_id=conversation_id, last_seq=1)
    assert (ready["resumed"], ready["replay_count"], ready["last_seq"]) == (False, 0, frames[-1]["seq"])
    await back.assert_silent()
    # Numbering continues after the pruned part: no seq is ever reused.
    live = await back.converse("new")
    assert min(f["seq"] for f in sequenced(live)) == frames[-1]["seq"] + 1
    await back.drop()


async def test_acks_are_batched_per_socket_and_flushed_at_close(settings, node_app, token):
    settings.REALTIME_ACK_FLUSH_INTERVAL = 60
    c = WSClient(node_app)
    ready = await c.connect(token)
    frames = await c.converse("one")
    first, last = frames[0]["seq"], frames[-1]["seq"]
    for seq in (first, last):
        await c.send({"type": "ack", "seq": seq})
    await c.send({"type": "ping", "id": "sync"})
    assert await c.recv() == {"type": "pong", "id": "sync"}
    row = await database_sync_to_async(Connection.objects.get)(conversation_id=ready["conversation_id"])
    assert row.acked_seq == first  # the second ack waits for the flush interval...
    await c.drop()
    conversation = await database_sync_to_async(Conversation.objects.get)(pk=ready["conversation_id"])
    assert conversation.acked_seq == last  # ...and is not lost when the socket closes


async def test_trailing_event_committed_during_replay_is_not_left_to_the_resync(settings, cluster, token, monkeypatch):
    """An event committed and announced while the resuming socket reads its backlog, with
    nothing after it: no later gap reveals it, so the replay itself must pick it up."""
    settings.REALTIME_RESYNC_INTERVAL = 60
    node, app = cluster("node-1")
    c = WSClient(app)
    ready = await c.connect(token)
    frames = await c.converse("one")
    await c.drop()
    conversation_id = ready["conversation_id"]
    original_open = services.open_session
    injected: list[dict] = []

    def open_with_a_commit_after_its_read(**kwargs):
        # open_session reads where the log stands and its first batch; the commit comes after.
        opened = original_open(**kwargs)
        event = services.append_event(conversation_id, "note", {"n": 1})
        injected.append(event.as_frame())
        async_to_sync(publish)(conversation_id, injected)
        # Let the node's fan-out hand the announcement to the socket still connecting.
        eventually_sync(
            lambda: any(s.state.known_upto >= event.seq for s in list(node.connections)),
            timeout=2, what="announcement delivered",
        )
        return opened

    monkeypatch.setattr(services, "open_session", open_with_a_commit_after_its_read)
    back = WSClient(app)
    await back.connect(token, conversation_id=conversation_id, last_seq=0)
    got = await back.recv_until(lambda f: f["type"] == "note", timeout=3)
    assert [f["seq"] for f in sequenced(got)] == list(range(1, injected[0]["seq"] + 1))
    assert sequenced(got)[:-1] == sequenced(frames)
    await back.assert_silent()
    await back.drop()
