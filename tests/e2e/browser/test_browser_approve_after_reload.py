"""Issue 21's browser test: approve after a reload; the cards match the server's log. The demo
agent's `transfer 5` asks for an approval; the page shows it as a card (tool, arguments, why,
expiry) with Approve and Deny; the page is reloaded while the approval waits; the reloaded
page shows the same card, still waiting, and its Approve makes the call: the answer ends
`transferred 5`, and the cards (call ids, statuses, decision, who decided) equal what
`GET /api/conversations/<id>/events/` returns, on this page and on a fresh tab that rebuilds
them from the log alone. TETHER_UPDATE_SCREENSHOTS=1 copies the waiting card's picture to
docs/demo-approval.png."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from sessions_app.models import Approval, ToolCall
from tests.support.demo_page import assert_cards_match_server, assert_page_matches_server, orm

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_approve_after_a_reload_and_the_cards_match_the_servers_log(site, open_page, tmp_path):
    s = site(nodes=1)
    page = open_page(s).sign_in(s.username, s.password)
    p = page.page
    conversation = page.conversation_id()
    p.get_by_role("button", name="transfer 5", exact=True).click()  # the suggestion fills the composer
    p.get_by_role("button", name="Send").click()

    call_id = page.wait_card("waiting")
    card = page.card(call_id)
    assert card.locator(".tool-name").text_content() == "demo.transfer"
    assert card.locator(".tool-args").text_content() == '{"n":5}'
    assert (card.get_attribute("data-reason"), card.get_attribute("data-decision")) == ("policy", None)
    assert re.fullmatch(r"Needs your approval\. Expires at \d\d:\d\d:\d\d( [AP]M)?\.",
                        card.locator(".tool-why").text_content())
    assert card.get_by_role("button", name="Deny").is_enabled()
    shot = tmp_path / "demo-approval.png"
    p.screenshot(path=str(shot))
    if os.environ.get("TETHER_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(shot, DOCS / shot.name)
    assert assert_cards_match_server(page, s.url, s.username, s.password, conversation)[0].status == "waiting"

    p.reload()
    page.wait_state("connected")
    # The reloaded page shows the card again (from its saved view, resumed from the log), still waiting.
    page.wait_card_status(call_id, "waiting")
    assert_cards_match_server(page, s.url, s.username, s.password, conversation)
    page.card(call_id).get_by_role("button", name="Approve").click()

    page.wait_answers(1)
    shown = assert_page_matches_server(page, conversation)
    assert shown.answers[0][2].endswith("transferred 5")
    me = page.client_id()
    cards = assert_cards_match_server(page, s.url, s.username, s.password, conversation)
    assert [(c.call_id, c.tool, c.effect, c.status, c.decision, c.by) for c in cards] == [
        (call_id, "demo.transfer", "once", "ok", "approved", me)]
    card = page.card(call_id)
    assert card.locator(".tool-decision").text_content() == "Approved by this tab"
    assert card.locator(".tool-result").text_content() == 'result: {"n":5,"simulated":true}'
    assert card.get_by_role("button").count() == 0  # decided: the buttons are gone
    assert page.page.locator("li.msg.assistant .proof").text_content() == "2 of 2 words, 0 gaps, 0 repeats"

    def journal():
        approval = Approval.objects.get(call_id=call_id)
        return approval.status, approval.decided_by, list(ToolCall.objects.filter(run_id=approval.run_id)
                                                           .values_list("status", "attempts"))

    assert orm(journal) == ("approved", me, [("ok", 1)])

    # A tab that never saw the run rebuilds the same cards from the log alone.
    fresh = open_page(s, f"#c={conversation}").sign_in(s.username, s.password)
    fresh.wait_answers(1)
    assert fresh.cards() == cards
    assert fresh.card(call_id).locator(".tool-decision").text_content().startswith("Approved by another tab or device")
    assert page.console == [] and fresh.console == []
