"""An approval decided in a second tab (its own client_id, on the other node): the first tab's
card shows that decision, and who made it, without a click, and its buttons go; both tabs end
with `transferred 5` and the server's cards. A late answer from the first tab (its own
`approval.respond` after the decision) gets `already_decided`, which its card says in a short
line; the page goes on (the next message is answered)."""

from __future__ import annotations

import pytest

from tests.support.demo_page import assert_cards_match_server, assert_page_matches_server

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_second_tab_decides_and_the_first_tab_shows_it_without_a_click(site, open_page):
    s = site(nodes=2)
    first = open_page(s).sign_in(s.username, s.password)
    conversation = first.conversation_id()
    first.send("transfer 5")
    call_id = first.wait_card("waiting")

    second = open_page(s, f"#c={conversation}", context=first.page.context, node=1).sign_in(s.username, s.password)
    assert first.badge()[1] != second.badge()[1]  # one tab per node: the decision crosses nodes
    second.wait_card_status(call_id, "waiting")  # the request, replayed from the log
    assert first.card(call_id).get_by_role("button", name="Approve").is_enabled()
    second.card(call_id).get_by_role("button", name="Approve").click()

    decider = second.client_id()
    assert decider != first.client_id()
    first.wait_card_status(call_id, "ok")
    card = first.card(call_id)
    assert (card.get_attribute("data-decision"), card.get_attribute("data-by")) == ("approved", decider)
    assert card.locator(".tool-decision").text_content() == f"Approved by another tab or device ({decider[:8]})"
    assert card.get_by_role("button").count() == 0
    assert second.card(call_id).locator(".tool-decision").text_content() == "Approved by this tab"

    for page in (first, second):
        page.wait_answers(1)
        assert assert_page_matches_server(page, conversation).answers[0][2].endswith("transferred 5")
    cards = assert_cards_match_server(first, s.url, s.username, s.password, conversation)
    assert [(c.call_id, c.status, c.decision, c.by) for c in cards] == [(call_id, "ok", "approved", decider)]
    assert second.cards() == cards

    # The first tab answers late (as a press drawn just before the decision arrived would).
    first.page.evaluate(f"window.tether.deny({call_id!r})")
    message = card.locator(".tool-message")
    message.wait_for()
    assert message.text_content() == "Already decided (approved): the first answer wins."
    assert card.get_attribute("data-decision") == "approved"  # the decision that stands
    first.send("count 5")
    first.wait_answers(2)
    assert assert_page_matches_server(first, conversation).answers[1][2] == "w1 w2 w3 w4 w5"
    assert first.badge()[0] == "connected"
    assert first.console == [] and second.console == []
