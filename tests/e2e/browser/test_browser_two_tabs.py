"""Two tabs on one conversation (each its own sessionStorage, so its own client_id), served
by two different nodes: a message from either tab and both answers appear in both tabs, once
each, equal to the server's record."""

from __future__ import annotations

import pytest

from tests.support.demo_page import assert_page_matches_server, count_answer

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_two_tabs_on_one_conversation_see_the_same_exact_conversation(site, open_page):
    s = site(nodes=2)
    first = open_page(s).sign_in(s.username, s.password)
    conversation = first.conversation_id()
    # The second tab opens the conversation's address (#c=<conversation>) on the other node.
    second = open_page(s, f"#c={conversation}", context=first.page.context, node=1).sign_in(s.username, s.password)
    assert second.conversation_id() == conversation
    assert first.badge()[1] != second.badge()[1]  # each page connects to its own node first

    first.send("count 60")
    first.wait_answer_words(5)
    second.send("count 40")  # queued behind the first run: runs of a conversation never overlap
    for page in (first, second):
        page.wait_answers(2)
    shown = [assert_page_matches_server(page, conversation) for page in (first, second)]
    assert shown[0] == shown[1]
    assert [text for _, text in shown[0].users] == ["count 60", "count 40"]
    assert [a[2] for a in shown[0].answers] == [count_answer(60), count_answer(40)]

    client_ids = set(first.client_ids(conversation))
    assert len(client_ids) == 2, client_ids  # two tabs, two identities: neither replaced the other
