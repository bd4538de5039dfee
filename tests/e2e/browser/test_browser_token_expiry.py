"""An access token that expires while the page is open (6 s tokens, `auth.expiring` 3 s
before): the page renews it over the open socket without dropping it, the answer streams on
to the end; later, with the browser offline past the renewed token's expiry, the client
renews before reconnecting instead of presenting an expired token (no 4401)."""

from __future__ import annotations

import time

import pytest

from tests.support.demo_page import assert_page_matches_server, count_answer

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LIFETIME = 6


# The `exp` of the access token the page keeps (base64url payload of the JWT).
TOKEN_EXP = """() => {
  const access = JSON.parse(sessionStorage.getItem("demo:auth")).access;
  return JSON.parse(atob(access.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).exp;
}"""


def token_exp(page) -> int:
    return page.page.evaluate(TOKEN_EXP)


def test_access_token_expiring_while_the_page_is_open(site, open_page):
    s = site(nodes=1, ACCESS_TOKEN_LIFETIME=LIFETIME, REALTIME_TOKEN_WARNING=3)
    page = open_page(s).sign_in(s.username, s.password)
    conversation = page.conversation_id()
    first_exp = token_exp(page)
    page.send("count 400")  # 8 s of streaming: longer than the token lives
    page.wait_answers(1, timeout=60)
    assert time.time() > first_exp, "the answer ended before the first token expired"
    assert token_exp(page) > first_exp  # renewed (tokenProvider: REST refresh, then auth.refresh on the socket)
    shown = assert_page_matches_server(page, conversation)
    assert shown.answers[0][2] == count_answer(400)
    states = page.states()
    assert [st["state"] for st in states] == ["connecting", "connected"], states  # never dropped

    # Offline until the current token has expired: back online, the client renews first.
    page.page.context.set_offline(True)
    page.wait_state("offline", timeout=5)
    expired_at = token_exp(page)
    while time.time() < expired_at + 1:
        page.page.wait_for_timeout(250)
    page.page.context.set_offline(False)
    page.wait_state("connected", timeout=15)
    assert token_exp(page) > expired_at
    page.send("count 5")
    page.wait_answers(2)
    assert_page_matches_server(page, conversation)
    assert not [st for st in page.states() if st.get("code") == 4401 or st.get("errorCode") == "token_expired"]
