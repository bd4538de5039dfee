"""The SDK's outbox: unacknowledged messages resent in order with the same ids."""

import uuid

import pytest
from tether_client.outbox import Outbox

pytestmark = pytest.mark.pure


def test_ids_are_generated_uuid4():
    outbox = Outbox()
    item = outbox.add("hello")
    assert uuid.UUID(item.client_msg_id).version == 4
    assert item.frame() == {"type": "message", "client_msg_id": item.client_msg_id, "text": "hello"}


def test_resend_after_every_reconnect_keeps_ids_and_order():
    outbox = Outbox()
    sent = [outbox.add(text) for text in ("one", "two", "three")]
    first_reconnect = outbox.resend_frames()
    second_reconnect = outbox.resend_frames()
    assert first_reconnect == second_reconnect
    assert [f["client_msg_id"] for f in first_reconnect] == [m.client_msg_id for m in sent]
    assert [f["text"] for f in first_reconnect] == ["one", "two", "three"]


def test_ack_removes_the_message():
    outbox = Outbox()
    one, two, three = (outbox.add(text) for text in ("one", "two", "three"))
    assert outbox.ack(two.client_msg_id) == two
    assert two.client_msg_id not in outbox
    assert [f["client_msg_id"] for f in outbox.resend_frames()] == [one.client_msg_id, three.client_msg_id]
    assert len(outbox) == 2


def test_duplicate_ack_removes_it_too_and_repeated_acks_are_harmless():
    outbox = Outbox()
    item = outbox.add("resent after a reconnect")
    # `{"type":"message.ack","duplicate":true}`: the server already had it.
    assert outbox.ack(item.client_msg_id) == item
    assert outbox.ack(item.client_msg_id) is None
    assert outbox.resend_frames() == []
    assert outbox.ack(str(uuid.uuid4())) is None  # an ack of someone else's message


def test_new_messages_queue_behind_pending_ones():
    outbox = Outbox()
    a = outbox.add("a")
    b = outbox.add("b")
    outbox.ack(a.client_msg_id)
    c = outbox.add("c")
    assert [m.client_msg_id for m in outbox.pending()] == [b.client_msg_id, c.client_msg_id]
    assert [m.client_msg_id for m in outbox] == [b.client_msg_id, c.client_msg_id]


def test_explicit_ids_are_normalised_and_unique():
    outbox = Outbox()
    msg_id = str(uuid.uuid4())
    assert outbox.add("x", client_msg_id=msg_id.upper()).client_msg_id == msg_id
    with pytest.raises(ValueError):
        outbox.add("y", client_msg_id=msg_id)
    with pytest.raises(ValueError):
        outbox.add("z", client_msg_id="not-a-uuid")


def test_discard_drops_a_refused_message():
    outbox = Outbox()
    item = outbox.add("far too long")
    assert outbox.discard(item.client_msg_id) == item
    assert len(outbox) == 0
