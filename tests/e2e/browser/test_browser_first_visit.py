"""A first-time visitor walks the demo page (issue 23): it says what Tether is, shows the demo
credentials (the demo user exists), suggests what to try, explains the fault buttons, says
what happened after each fault ("resumed on node web-2 after seq 41, 12 events replayed in
14 ms") and proves each answer ("300 of 300 words, 0 gaps, 0 repeats", computed by the page);
the tool prompts (`effect 3`, `transfer 5`) are suggested with a line each on what they show.
At phone size (390x844) the state badge and the fault buttons stay on screen while an answer
streams. Screenshots at both sizes are taken every run; TETHER_UPDATE_SCREENSHOTS=1 copies
them to docs/demo.png and docs/demo-phone.png (the README's pictures)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from tests.support.demo_page import DemoPage, assert_page_matches_server, count_answer, orm

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DOCS = Path(__file__).resolve().parents[3] / "docs"
RESUMED = (
    r"^{cause}: resumed on node (?P<node>web-\S+) after seq (?P<seq>\d+), "
    r"(no events to replay|(?P<count>\d+) events? replayed in \d+ ms) \(\d+\.\d s without a socket\)$"
)


def happened(page: DemoPage, cause: str) -> re.Match:
    """Waits for the "what just happened" line of `cause` to be complete; returns its match."""
    pattern = RESUMED.format(cause=re.escape(cause))
    page.wait_true(
        f"new RegExp({pattern.replace('(?P<', '(?<')!r}).test(document.getElementById('happened').textContent)",
        timeout=20,
    )
    return re.match(pattern, page.page.locator("#happened").text_content())


def proof_of_last_answer(page: DemoPage) -> tuple[str, str | None]:
    line = page.page.locator("li.msg.assistant").last.locator(".proof")
    return line.text_content(), line.get_attribute("data-exact")


def save(page: DemoPage, tmp_path: Path, name: str) -> None:
    shot = tmp_path / name
    page.page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("TETHER_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(shot, DOCS / name)


def on_screen(page: DemoPage, selector: str) -> bool:
    """The element is inside the viewport (not scrolled away, not below the fold)."""
    box = page.page.locator(selector).bounding_box()
    size = page.page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= size["height"]


@pytest.fixture
def demo_user():
    """The user `make demo` creates (manage.py create_demo_user): the page shows its credentials."""
    orm(lambda: get_user_model().objects.create_user(username="demo", password="demo-password"))


def test_a_first_time_visitor_is_taught_and_shown_proof(site, chromium, demo_user, tmp_path):
    s = site(nodes=2, REALTIME_DEMO_AGENT_DELAY_MS=25)  # 'count 300': about 8 s
    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    try:
        page = DemoPage(context.new_page(), s.url).open()
        p = page.page
        # Before signing in: what it is, the credentials, what to try, what the faults do.
        about = p.locator("#about").text_content()
        assert "Tether keeps conversations with an AI agent alive over unreliable WebSockets" in about
        credentials = p.locator("#demo-credentials")
        assert credentials.is_visible()
        shown = re.sub(r"\s+", " ", credentials.text_content())
        assert shown.startswith("Demo account: user demo, password demo-password"), shown
        steps = p.locator(".steps").text_content()
        for prompt in ("count 300", "my name is Ada", "what is my name?", "Drop connection", "Go offline 5 s",
                       "effect 3", "transfer 5"):
            assert prompt in steps, prompt

        page.sign_in("demo", "demo-password")
        for prompt in ("count 300", "my name is Ada", "what is my name?", "effect 3", "transfer 5"):
            assert p.get_by_role("button", name=prompt, exact=True).is_visible(), prompt
        assert "network drop" in p.locator("#drop-help").text_content()
        # One line each on what the tool prompts show.
        assert "once, even across node deaths" in p.locator("#effect-help").text_content()
        assert "after a reload, from a second tab or after a node restart" in p.locator("#transfer-help").text_content()
        transfer = p.get_by_role("button", name="transfer 5", exact=True)
        assert transfer.get_attribute("aria-describedby") == "transfer-help"
        assert "off the network for 5 s" in p.locator("#offline-help").text_content()
        assert p.get_by_role("button", name="Drop connection").get_attribute("aria-describedby") == "drop-help"
        conversation = page.conversation_id()

        # A suggestion fills the composer; a short answer gets its check at once.
        p.get_by_role("button", name="my name is Ada", exact=True).click()
        assert p.get_by_label("Message").input_value() == "my name is Ada"
        p.get_by_role("button", name="Send").click()
        page.wait_answers(1)
        # "Nice to meet you, Ada. I will remember your name."
        assert proof_of_last_answer(page) == ("10 of 10 words, 0 gaps, 0 repeats", "true")
        # The conversation is titled from its first message.
        current = "document.querySelector('#conversation-list [aria-current=true]').textContent"
        page.wait_true(f"{current} === 'my name is Ada'")

        p.get_by_role("button", name="count 300", exact=True).click()
        p.get_by_role("button", name="Send").click()
        page.wait_answer_words(40)
        p.get_by_role("button", name="Drop connection").click()
        dropped = happened(page, "Dropped the connection")
        page.wait_answer_words(page.last_answer_words() + 10)
        text, exact = proof_of_last_answer(page)
        assert re.fullmatch(r"\d+ words so far, 0 gaps, 0 repeats", text) and exact is None, text
        save(page, tmp_path, "demo.png")

        p.get_by_role("button", name="Go offline 5 s").click()
        offline = happened(page, "Offline for 5 s")
        assert int(offline["seq"]) > int(dropped["seq"])
        assert int(offline["count"] or 0) >= 1  # the agent went on writing while the page was away

        page.wait_answers(2, timeout=60)
        assert proof_of_last_answer(page) == ("300 of 300 words, 0 gaps, 0 repeats", "true")
        shown = assert_page_matches_server(page, conversation)
        assert shown.answers[1][2] == count_answer(300)

        p.reload()
        page.wait_state("connected")
        reloaded = happened(page, "Reloaded the page")
        assert reloaded.group(0).endswith(")") and "no events to replay" in reloaded.group(0)
        assert proof_of_last_answer(page) == ("300 of 300 words, 0 gaps, 0 repeats", "true")
    finally:
        context.close()


def test_on_a_phone_the_state_and_the_fault_buttons_stay_in_view(site, chromium, demo_user, tmp_path):
    s = site(nodes=1, REALTIME_DEMO_AGENT_DELAY_MS=25)
    context = chromium.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                   is_mobile=True, has_touch=True)
    try:
        page = DemoPage(context.new_page(), s.url).open()
        p = page.page
        assert p.locator("#demo-credentials").is_visible()
        page.sign_in("demo", "demo-password")
        page.send("count 300")
        page.wait_answer_words(60)
        # Read to the end of the page, as a person following the answer does.
        p.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        for selector in ("#badge", "#drop", "#go-offline"):
            assert on_screen(page, selector), selector
        p.locator("#drop").tap()
        happened(page, "Dropped the connection")
        assert on_screen(page, "#happened")
        page.wait_answer_words(page.last_answer_words() + 10)
        p.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        assert on_screen(page, "#badge") and on_screen(page, "#drop")
        save(page, tmp_path, "demo-phone.png")
        page.wait_answers(1, timeout=60)
        assert proof_of_last_answer(page) == ("300 of 300 words, 0 gaps, 0 repeats", "true")
    finally:
        context.close()
