"""A browser goes offline while an answer streams (`context.set_offline`), and comes back: the
page declares its socket dead at once (the `offline` event; Chromium keeps WebSockets open
under emulated offline), shows nothing new while offline although the server keeps streaming,
and once online resumes after what it shows: the answer on the page is the server's
completed text, nothing missing, nothing twice."""

from __future__ import annotations

import pytest

from tests.support.demo_page import (
    assert_page_matches_server,
    assert_prefix_of_answer,
    count_answer,
    run_progress,
    wait_server,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_answer_streaming_while_the_browser_goes_offline_and_back(site, open_page):
    s = site(nodes=1)
    page = open_page(s).sign_in(s.username, s.password)
    conversation = page.conversation_id()
    page.send("count 200")
    page.wait_answer_words(10)

    page.page.context.set_offline(True)
    page.wait_state("offline", timeout=5)
    frozen = assert_prefix_of_answer(page, 200)
    # The run goes on without the page: wait until the server is well past what the page shows.
    wait_server(lambda: run_progress(conversation) >= frozen + 40, what="the server streaming on")
    assert page.last_answer_words() == frozen, "the page kept receiving while offline"

    page.page.context.set_offline(False)
    page.wait_state("connected", timeout=10)
    page.wait_answer_words(frozen + 1)  # the replay after what the page showed
    assert_prefix_of_answer(page, 200)
    page.wait_answers(1)
    shown = assert_page_matches_server(page, conversation)
    assert shown.answers[0][2] == count_answer(200)
    states = [s["state"] for s in page.states()]
    assert states[states.index("offline") + 1 :][:2] == ["reconnecting", "connected"], states
