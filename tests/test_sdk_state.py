"""Resume state of the Python SDK: dedupe by seq, gap detection, resumed:false."""

import pytest
from tether_client.state import Arrival, ResumeState

pytestmark = pytest.mark.pure

CONV = "5b0c0d6e-8a2f-4c43-9a43-5d1f7d0b2a11"


def ready(**fields):
    frame = {"type": "ready", "conversation_id": CONV, "resumed": True, "last_seq": 0, "replay_count": 0}
    frame.update(fields)
    return frame


def test_new_conversation_starts_at_the_servers_last_seq():
    state = ResumeState()
    assert state.connect_fields() == {"conversation_id": None, "last_seq": None}
    outcome = state.on_ready(ready(resumed=False, last_seq=0), None, None)
    assert outcome.new_conversation and not outcome.resumed and not outcome.reload_required
    assert state.conversation_id == CONV
    assert state.last_seq == 0
    assert state.classify(1) is Arrival.NEXT


def test_events_apply_in_order_and_duplicates_are_dropped():
    state = ResumeState(CONV, 0)
    applied = []
    for seq in [1, 2, 2, 1, 3, 3, 4]:
        arrival = state.classify(seq)
        if arrival is Arrival.NEXT:
            state.apply(seq)
            applied.append(seq)
        else:
            assert arrival is Arrival.DUPLICATE
    assert applied == [1, 2, 3, 4]
    assert state.last_seq == 4


def test_a_gap_is_detected_and_not_applied():
    state = ResumeState(CONV, 4)
    assert state.classify(6) is Arrival.GAP
    assert state.classify(100) is Arrival.GAP
    with pytest.raises(ValueError):
        state.apply(6)
    assert state.last_seq == 4  # the resume asks for everything after 4
    assert state.connect_fields() == {"conversation_id": CONV, "last_seq": 4}


def test_resume_keeps_last_seq_and_the_replay_follows():
    state = ResumeState(CONV, 4)
    outcome = state.on_ready(ready(resumed=True, last_seq=7, replay_count=3), CONV, 4)
    assert outcome.resumed and not outcome.reload_required
    assert (outcome.server_last_seq, outcome.replay_count) == (7, 3)
    assert state.last_seq == 4
    assert [state.classify(s) for s in (4, 5, 6)] == [Arrival.DUPLICATE, Arrival.NEXT, Arrival.GAP]


def test_fresh_client_of_an_existing_conversation_gets_the_whole_log():
    state = ResumeState(CONV, None)
    outcome = state.on_ready(ready(resumed=True, last_seq=3, replay_count=3), CONV, None)
    assert outcome.resumed and not outcome.reload_required
    assert state.last_seq == 0
    assert state.classify(1) is Arrival.NEXT


def test_resumed_false_requires_a_reload_and_continues_from_the_servers_last_seq():
    state = ResumeState(CONV, 10)
    outcome = state.on_ready(ready(resumed=False, last_seq=50), CONV, 10)
    assert outcome.reload_required and not outcome.resumed and not outcome.new_conversation
    assert outcome.reload_after_seq == 10
    assert outcome.server_last_seq == 50
    assert state.last_seq == 50
    assert state.classify(50) is Arrival.DUPLICATE  # already in the reloaded history
    assert state.classify(51) is Arrival.NEXT


def test_resumed_false_when_the_client_is_ahead_of_the_log():
    state = ResumeState(CONV, 99)
    outcome = state.on_ready(ready(resumed=False, last_seq=5), CONV, 99)
    assert outcome.reload_required
    assert state.last_seq == 5
    assert state.classify(6) is Arrival.NEXT


def test_resumed_false_for_a_fresh_client_whose_log_start_was_pruned():
    state = ResumeState(CONV, None)
    outcome = state.on_ready(ready(resumed=False, last_seq=30), CONV, None)
    assert outcome.reload_required and outcome.reload_after_seq == 0
    assert state.last_seq == 30


def test_cumulative_ack_bookkeeping():
    state = ResumeState(CONV, 0)
    assert not state.ack_pending()
    for seq in (1, 2, 3):
        state.apply(seq)
    assert state.ack_pending() and state.unacked_count() == 3
    state.mark_acked(3)
    assert not state.ack_pending()
    state.mark_acked(1)  # never goes backwards
    assert state.acked_seq == 3


def test_negative_last_seq_is_refused():
    with pytest.raises(ValueError):
        ResumeState(CONV, -1)
