"""An approval outlives the page's node: with two nodes, the node the page is connected to is
stopped (SIGTERM: it drains) while `transfer 5` waits for its approval. The page moves to the
other node, its card still waiting (the wait holds no node), and Approve there makes the call:
the answer ends `transferred 5` on the run's new node, and the cards equal the server's log."""

from __future__ import annotations

import pytest

from sessions_app.models import AgentRun, ToolCall
from tests.support.demo_page import assert_cards_match_server, assert_page_matches_server, orm

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_approve_after_the_pages_node_is_stopped(site, open_page):
    s = site(nodes=2)
    page = open_page(s).sign_in(s.username, s.password)
    conversation = page.conversation_id()
    node_id = page.wait_state("connected")
    page.send("transfer 5")
    call_id = page.wait_card("waiting")
    run = orm(lambda: AgentRun.objects.get(conversation_id=conversation))
    assert (run.status, run.node) == ("waiting", "")  # no node holds the waiting run

    doomed = s.node(node_id)
    doomed.proc.terminate()  # SIGTERM: drain
    assert doomed.proc.wait(20) == 0, doomed.tail()
    page.page.locator(f'#badge[data-state=connected]:not([data-node="{node_id}"])').wait_for(timeout=30_000)
    survivor = page.badge()[1]
    page.wait_card_status(call_id, "waiting")
    page.card(call_id).get_by_role("button", name="Approve").click()

    page.wait_answers(1)
    assert assert_page_matches_server(page, conversation).answers[0][2].endswith("transferred 5")
    url = s.url_of(next(i for i, n in enumerate(s.nodes) if n.node_id == survivor))
    cards = assert_cards_match_server(page, url, s.username, s.password, conversation)
    assert [(c.call_id, c.effect, c.status, c.decision, c.by) for c in cards] == [
        (call_id, "once", "ok", "approved", page.client_id())]
    assert page.card(call_id).locator(".tool-decision").text_content() == "Approved by this tab"

    def after():
        run = AgentRun.objects.get(conversation_id=conversation)
        return run.status, run.node, list(ToolCall.objects.filter(run=run).values_list("status", "attempts"))

    assert orm(after) == ("completed", survivor, [("ok", 1)])
