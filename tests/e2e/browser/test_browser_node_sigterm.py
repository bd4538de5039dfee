"""SIGTERM of the node the page is connected to: the node drains (`reconnect` + 4012), the
page moves to the other node at once, and the answer, handed over to that node, completes on
the page with the server's exact text."""

from __future__ import annotations

import pytest

from tests.support.demo_page import assert_page_matches_server, count_answer

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_page_moves_to_the_other_node_when_its_node_is_terminated(site, open_page):
    s = site(nodes=2)
    page = open_page(s).sign_in(s.username, s.password)
    conversation = page.conversation_id()
    node_id = page.wait_state("connected")
    page.send("count 250")
    page.wait_answer_words(15)

    doomed = s.node(node_id)
    doomed.proc.terminate()  # SIGTERM: drain
    assert doomed.proc.wait(20) == 0, doomed.tail()
    page.wait_answers(1, timeout=60)
    state, now_on = page.badge()
    assert state == "connected" and now_on != node_id, (state, now_on)
    shown = assert_page_matches_server(page, conversation)
    assert shown.answers[0][2] == count_answer(250)
    moves = [st for st in page.states() if st["state"] == "reconnecting" and st.get("code") is not None]
    assert moves and moves[0]["code"] == 4012 and moves[0]["delayMs"] == 0, moves  # told to go, went at once
