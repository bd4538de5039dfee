"""The other ways an approval ends on the demo page: Deny (the call is never made: its card
ends `denied`, "Denied by this tab", the answer `transfer denied`) and Stop while the run
waits (the cancel denies the approval: the card ends `denied`, the answer `stopped`). Either
way the cards equal the server's log and no call was made."""

from __future__ import annotations

import pytest

from sessions_app.models import ToolCall
from tests.support.demo_page import assert_cards_match_server, assert_page_matches_server, orm

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_deny_and_stop_end_an_approval_without_the_call(site, open_page):
    s = site(nodes=1)
    page = open_page(s).sign_in(s.username, s.password)
    conversation = page.conversation_id()
    me = page.client_id()

    page.send("transfer 5")
    denied = page.wait_card("waiting")
    page.card(denied).get_by_role("button", name="Deny").click()
    page.wait_answers(1)
    card = page.card(denied)
    assert card.get_attribute("data-status") == "denied"
    assert card.locator(".tool-decision").text_content() == "Denied by this tab"
    assert card.locator(".tool-result").text_content() == "not called: approval denied"

    page.send("transfer 7")
    stopped = page.page.locator(".tool-card[data-status=waiting]").last
    stopped.wait_for()
    stopped_id = stopped.get_attribute("data-call-id")
    page.page.get_by_role("button", name="Stop").click()
    page.wait_answers(1, statuses="stopped")
    assert page.card(stopped_id).get_attribute("data-status") == "denied"

    shown = assert_page_matches_server(page, conversation)
    assert [(a[1], a[2]) for a in shown.answers] == [("done", "transfer denied"), ("stopped", "")]
    cards = assert_cards_match_server(page, s.url, s.username, s.password, conversation)
    assert [(c.call_id, c.effect, c.status, c.decision, c.by) for c in cards] == [
        (denied, None, "denied", "denied", me), (stopped_id, None, "denied", "denied", me)]
    calls = orm(lambda: list(ToolCall.objects.filter(conversation_id=conversation).values_list("status", "attempts")))
    assert calls == [("denied", 0), ("denied", 0)]  # neither call was ever made
