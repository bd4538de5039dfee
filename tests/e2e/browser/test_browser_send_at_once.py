"""Send clicked right after sign-in (issue 25, item 6): the composer's submit used to return
silently while the page's client did not exist yet (between sign-in and the end of
openConversation's awaits), so a fast typist's message vanished. Now Send is disabled, and says
why, until the client exists; the first click it accepts goes into the client's outbox and is
delivered once.

The window is forced open, not hoped for: the page's node discovery request (one of the awaits
before the client is made) is held until the test has looked at the composer and started its
click, and released then."""

from __future__ import annotations

import time

import pytest

from sessions_app.models import AgentRun, Message
from tests.support.demo_page import assert_page_matches_server, count_answer, orm

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_send_clicked_at_once_after_sign_in_is_delivered_once(site, open_page):
    s = site(nodes=1)
    page = open_page(s)
    held = []
    page.page.route("**/api/realtime/nodes/", lambda route: held.append(route))

    page.page.get_by_label("Username").fill(s.username)
    page.page.get_by_label("Password").fill(s.password)
    page.page.get_by_role("button", name="Sign in").click()
    page.page.wait_for_selector("#app:not([hidden])")
    page.page.get_by_label("Message").fill("count 20")  # typing works at once
    deadline = time.monotonic() + 15
    while not held:  # Playwright calls the route handler while the test waits in a Playwright call
        assert time.monotonic() < deadline, "the page never asked for the nodes"
        page.page.wait_for_timeout(20)
    # The page waits for discovery: no client yet, and Send says so instead of swallowing a click.
    send = page.page.get_by_role("button", name="Send")
    assert send.is_disabled()
    assert page.page.locator("#composer-state").text_content() == "Opening the conversation…"
    assert page.page.evaluate("window.tether === undefined")
    page.page.keyboard.press("Enter")  # implicit submission does nothing while Send is disabled
    assert page.page.locator("li.msg").count() == 0

    for route in held:
        route.continue_()
    page.page.unroute("**/api/realtime/nodes/")
    send.click()  # waits for Send to be enabled: the first moment the page accepts a message
    page.wait_answers(1)
    conversation = page.conversation_id()
    shown = assert_page_matches_server(page, conversation)
    assert [text for _, text in shown.users] == ["count 20"]
    assert shown.answers[0][2] == count_answer(20)
    assert orm(lambda: Message.objects.filter(conversation_id=conversation, role="user").count()) == 1
    assert orm(lambda: AgentRun.objects.filter(conversation_id=conversation).count()) == 1
    assert page.page.locator("#composer-state").is_hidden()
