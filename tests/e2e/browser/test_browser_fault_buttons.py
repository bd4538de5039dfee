"""The issue's "done when": 'count 300', then "Drop connection", "Go offline 5 s" and a
reload, all mid-answer: the answer on the page is exact and complete."""

from __future__ import annotations

import pytest

from tests.support.demo_page import assert_page_matches_server, count_answer

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_drop_go_offline_and_reload_mid_answer(site, open_page):
    s = site(nodes=2, REALTIME_DEMO_AGENT_DELAY_MS=30)  # 'count 300': about 9 s
    page = open_page(s).sign_in(s.username, s.password)
    conversation = page.conversation_id()
    page.send("count 300")
    page.wait_answer_words(10)

    page.page.get_by_role("button", name="Drop connection").click()
    page.wait_state("connected", timeout=10)
    page.wait_answer_words(page.last_answer_words() + 10)

    page.page.get_by_role("button", name="Go offline 5 s").click()
    page.wait_state("offline", timeout=2)
    page.wait_state("connected", timeout=15)
    offline = [st for st in page.states() if st["state"] == "offline"]
    back = next(st for st in page.states() if st["state"] == "connected" and st["at"] > offline[0]["at"])
    assert back["at"] - offline[0]["at"] >= 4900  # refused to connect for the 5 s

    page.page.reload()
    page.wait_state("connected", timeout=15)
    page.wait_answers(1, timeout=60)
    shown = assert_page_matches_server(page, conversation)
    assert shown.answers[0][2] == count_answer(300)
