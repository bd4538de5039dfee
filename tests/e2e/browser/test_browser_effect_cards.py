"""`effect 3` on the demo page: three tool calls, three cards, each `ok` once, also when the node
holding the run is SIGKILLed after the first one (the other node takes the run over; a `local`
effect is recorded with its result, so none happens twice). The page that lost its node
resumes on the other one; its cards are those of the server's log, and the check under the
answer still holds: tool events are sequenced events (none skipped, none twice) and the words
are only the `agent.delta` text ("11 of 11 words, 0 gaps, 0 repeats")."""

from __future__ import annotations

import pytest

from sessions_app.models import AgentRun, DemoEffect
from tests.support.demo_page import (
    assert_cards_match_server,
    assert_page_matches_server,
    orm,
    run_progress,
    wait_server,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ANSWER = "effect 1 ok effect 2 ok effect 3 ok done 3"


def test_effect_3_shows_three_cards_each_ok_once_across_the_death_of_the_runs_node(site, open_page):
    s = site(nodes=2, REALTIME_DEMO_AGENT_DELAY_MS=700)  # a call every 0.7 s: the kill lands mid-run
    page = open_page(s).sign_in(s.username, s.password)
    conversation = page.conversation_id()
    page.page.get_by_role("button", name="effect 3", exact=True).click()
    page.page.get_by_role("button", name="Send").click()

    first = page.wait_card("ok")
    holder = wait_server(lambda: orm(lambda: AgentRun.objects.filter(conversation_id=conversation)
                                     .values_list("node", flat=True).first()), what="the run's node")
    assert run_progress(conversation) < 9  # the run is not finished: calls 2 and 3 are still to come
    s.node(holder).kill()  # SIGKILL: the run is taken over by the other node after its lease

    page.wait_answers(1, timeout=60)
    shown = assert_page_matches_server(page, conversation)
    assert shown.answers[0][2] == ANSWER
    survivor = next(i for i, n in enumerate(s.nodes) if n.node_id != holder)
    cards = assert_cards_match_server(page, s.url_of(survivor), s.username, s.password, conversation)
    assert cards[0].call_id == first
    assert [(c.tool, c.effect, c.status) for c in cards] == [("demo.effect", "local", "ok")] * 3
    assert len({c.call_id for c in cards}) == 3
    assert page.page.locator("li.msg.assistant .proof").text_content() == "11 of 11 words, 0 gaps, 0 repeats"
    assert page.page.locator("li.msg.assistant .proof").get_attribute("data-exact") == "true"

    # Each effect happened once: one row per call, n = 1, 2, 3.
    rows = orm(lambda: sorted(DemoEffect.objects.filter(conversation_id=conversation).values_list("n", "call_id")))
    assert [(n, str(call_id)) for n, call_id in rows] == [(i + 1, c.call_id) for i, c in enumerate(cards)]
    run_node = orm(lambda: AgentRun.objects.get(conversation_id=conversation).node)
    assert run_node == s.nodes[survivor].node_id  # finished by the other node
