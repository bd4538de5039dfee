"""A continued run's text cursor (realtime/runs/replay.py): an acting agent replayed from the
start after a takeover says nothing twice and cannot say something else under the same run."""

from __future__ import annotations

import pytest

from realtime.runs.replay import Divergence, TextCursor

pytestmark = pytest.mark.pure


def test_committed_text_is_dropped_and_only_what_follows_goes_out():
    cursor = TextCursor("w1 w2 w3 ")
    assert cursor.behind
    assert cursor.text("w1 ") == ""
    assert cursor.text("w2 ") == ""
    # A piece that straddles the end of the committed text: its committed head is dropped.
    assert cursor.text("w3 w4 ") == "w4 "
    assert not cursor.behind
    assert cursor.text("w5") == "w5"
    assert cursor.position == len("w1 w2 w3 w4 w5")
    cursor.finished()


def test_other_text_than_the_committed_one_is_a_divergence():
    cursor = TextCursor("effect 1 ok ")
    with pytest.raises(Divergence, match="differs from the committed text"):
        cursor.text("effect 1 error ")


def test_a_step_must_happen_where_it_was_recorded():
    cursor = TextCursor("effect 1 ok ")
    cursor.expect(0, "tool call 0")
    cursor.text("effect 1 ok ")
    with pytest.raises(Divergence, match="tool call 1 was recorded at text offset 5"):
        cursor.expect(5, "tool call 1")


def test_a_recorded_model_response_is_replayed_over_the_committed_text():
    cursor = TextCursor("Hello there. More")
    cursor.replay("Hello there. ", "model request 0")
    with pytest.raises(Divergence):
        cursor.replay("Bye", "model request 1")
    # An interrupted response streamed "More": the new one continues after it.
    assert cursor.take_tail() == "More"
    assert not cursor.behind
    assert cursor.text(" and more") == " and more"


def test_an_agent_that_ends_before_its_committed_text_diverged():
    cursor = TextCursor("w1 w2 ")
    cursor.text("w1 ")
    with pytest.raises(Divergence, match="ended at text offset 3 of 6"):
        cursor.finished()
