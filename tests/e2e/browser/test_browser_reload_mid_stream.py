"""A page reload while an answer streams: the tab stays signed in, reopens its conversation,
and its client resumes after the seq the saved view reflects (same client_id, from
sessionStorage); the answer on the page is the server's completed text, nothing missing,
nothing twice."""

from __future__ import annotations

import pytest

from tests.support.demo_page import assert_page_matches_server, assert_prefix_of_answer, count_answer

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_page_reload_mid_stream_resumes_the_answer(site, open_page):
    s = site(nodes=1)
    page = open_page(s).sign_in(s.username, s.password)
    conversation = page.conversation_id()
    page.send("count 200")
    page.wait_answer_words(15)
    before = assert_prefix_of_answer(page, 200)

    page.page.reload()
    page.wait_state("connected", timeout=15)
    assert page.conversation_id() == conversation  # the tab kept its conversation
    first_connect = page.states()[0]
    assert first_connect["state"] == "connecting"
    # What the page showed before the reload is back at once, from the saved view.
    assert assert_prefix_of_answer(page, 200) >= min(before, 10)
    page.wait_answer_words(before + 10)
    assert_prefix_of_answer(page, 200)
    page.wait_answers(1)
    shown = assert_page_matches_server(page, conversation)
    assert shown.answers[0][2] == count_answer(200)

    # One tab identity across the reload: both sockets carried the same client_id.
    client_ids = page.client_ids(conversation)
    assert len(client_ids) >= 2 and len(set(client_ids)) == 1, client_ids
