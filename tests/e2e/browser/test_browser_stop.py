"""Stop: the button shows while an answer streams; pressing it cancels the run; the page shows
the answer as stopped with exactly the text the server had committed, and the button goes
away."""

from __future__ import annotations

import pytest

from sessions_app.models import AgentRun
from tests.support.demo_page import assert_page_matches_server, orm

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_stop_cancels_the_streaming_answer(site, open_page):
    s = site(nodes=1)
    page = open_page(s).sign_in(s.username, s.password)
    conversation = page.conversation_id()
    stop = page.page.get_by_role("button", name="Stop")
    assert stop.is_hidden()
    page.send("count 400")
    page.wait_answer_words(10)
    stop.click()
    page.wait_answers(1, statuses="stopped")
    assert stop.is_hidden()
    run = orm(lambda: AgentRun.objects.get(conversation_id=conversation))
    assert run.status == AgentRun.Status.CANCELLED
    shown = assert_page_matches_server(page, conversation)
    words = shown.answers[0][2].split()
    assert 10 <= len(words) < 400 and words == [f"w{i}" for i in range(1, len(words) + 1)], shown.answers
