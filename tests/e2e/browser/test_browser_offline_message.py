"""A message typed while the browser is offline waits in the client's outbox (shown as
"sending...", kept in sessionStorage) and is delivered exactly once when the browser is back
online: one user message and one answer on the server, each once on the page."""

from __future__ import annotations

import pytest

from sessions_app.models import AgentRun, Message
from tests.support.demo_page import assert_page_matches_server, count_answer, orm

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_message_typed_offline_is_delivered_once_back_online(site, open_page):
    s = site(nodes=1)
    page = open_page(s).sign_in(s.username, s.password)
    conversation = page.conversation_id()

    page.page.context.set_offline(True)
    page.wait_state("offline", timeout=5)
    page.send("count 30")
    page.page.wait_for_selector("li.msg.pending")
    assert page.shown().pending == ["count 30"]
    stored = page.page.evaluate("Object.keys(sessionStorage).filter((k) => k.startsWith('tether:conv:'))")
    outbox = page.page.evaluate(f"JSON.parse(sessionStorage.getItem({stored[0]!r})).outbox")
    assert [m["text"] for m in outbox] == ["count 30"]
    assert orm(lambda: Message.objects.filter(conversation_id=conversation).count()) == 0

    page.page.context.set_offline(False)
    page.wait_answers(1)
    shown = assert_page_matches_server(page, conversation)
    assert [text for _, text in shown.users] == ["count 30"]
    assert shown.answers[0][2] == count_answer(30)
    assert orm(lambda: Message.objects.filter(conversation_id=conversation, role="user").count()) == 1
    assert orm(lambda: AgentRun.objects.filter(conversation_id=conversation).count()) == 1
    assert page.page.evaluate("window.tether.pendingMessages.length") == 0
