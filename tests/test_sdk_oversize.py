"""The SDK's rule for a "frame too large" close (tether_client.oversize): which message it
refers to, so that the message is dropped instead of resent forever."""

import pytest
from tether_client.oversize import SentFrames, frame_size

pytestmark = pytest.mark.pure


def _message(msg_id: str) -> dict:
    return {"type": "message", "client_msg_id": msg_id, "text": "..."}


def test_the_largest_pending_message_is_the_refused_frame():
    sent = SentFrames()
    sent.record({"type": "connect", "token": "t"}, 400)
    sent.record(_message("small"), 100)
    sent.record(_message("huge"), 1_000_000)
    sent.record(_message("after"), 200)
    assert sent.culprit({"small", "huge", "after"}) == "huge"


def test_acknowledged_messages_are_not_blamed():
    """A message the server acknowledged was within the limit, whatever its size."""
    sent = SentFrames()
    sent.record({"type": "connect"}, 400)
    sent.record(_message("accepted"), 60_000)
    sent.record(_message("refused"), 50_000)  # smaller, but the server did not accept it
    assert sent.culprit({"refused"}) == "refused"


def test_no_pending_message_no_culprit():
    sent = SentFrames()
    sent.record({"type": "connect"}, 400)
    sent.record(_message("acked"), 100_000)
    assert sent.culprit(set()) is None
    assert SentFrames().culprit({"anything"}) is None


def test_a_larger_non_message_frame_blames_no_message():
    """A huge `connect` or `auth.refresh` may be what was refused: dropping a message
    would lose it for nothing."""
    sent = SentFrames()
    sent.record({"type": "auth.refresh", "access": "x" * 90_000}, 90_020)
    sent.record(_message("innocent"), 70_000)
    assert sent.culprit({"innocent"}) is None
    sent.record(_message("equal"), 90_020)
    assert sent.culprit({"innocent", "equal"}) is None  # a tie cannot tell them apart


def test_a_message_sent_twice_on_one_socket_counts_once_with_its_size():
    sent = SentFrames()
    sent.record({"type": "connect"}, 400)
    sent.record(_message("m"), 80_000)
    sent.record(_message("m"), 80_000)
    assert sent.messages == {"m": 80_000}
    assert sent.culprit({"m"}) == "m"


def test_equal_sizes_blame_the_first_sent():
    sent = SentFrames()
    sent.record({"type": "connect"}, 400)
    sent.record(_message("first"), 70_000)
    sent.record(_message("second"), 70_000)
    assert sent.culprit({"first", "second"}) == "first"


def test_frame_size_counts_utf8_bytes():
    assert frame_size("aé€😀") == 1 + 2 + 3 + 4
