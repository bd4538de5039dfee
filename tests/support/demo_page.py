"""Driving the demo page (`/`, demo/static/demo/app.js) in Chromium with Playwright, and
comparing what it shows with the server's record of the conversation.

`DemoPage` wraps one tab: it signs in, sends, reads the badge and the transcript, and records
every `state` event of the page's TetherClient (`window.tether`) so that a test can assert how
the page got where it is. `assert_page_matches_server` is the check every browser test ends
with: each user message and each answer the server stored, once, in order, with the server's
exact text, and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from django.db import connection

from sessions_app import services
from sessions_app.models import AgentRun, Connection, Event, Message

# Chromium as root needs --no-sandbox; the rest keeps a headless run quiet and offline.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Installed into every page before its scripts run: records the TetherClient's state events
# (the page replaces window.tether whenever it opens a conversation).
RECORD_STATES = """
window.__states = [];
let current;
Object.defineProperty(window, "tether", {
  configurable: true,
  get() { return current; },
  set(client) {
    current = client;
    client.addEventListener("state", (e) => window.__states.push({ ...e.detail, at: performance.now() }));
  },
});
"""

LAST_ANSWER_TEXT = """() => {
  const answers = document.querySelectorAll("li.msg.assistant");
  return answers.length ? answers[answers.length - 1].querySelector(".text").textContent : "";
}"""
LAST_ANSWER_WORDS = f"() => ({LAST_ANSWER_TEXT})().split(' ').filter(Boolean).length"

SHOWN = """() => {
  const items = [...document.querySelectorAll("#transcript li.msg")];
  const text = (li) => li.querySelector(".text").textContent;
  const pick = (selector, row) => items.filter((li) => li.matches(selector)).map(row);
  return {
    users: pick(".user:not(.pending)", (li) => [li.dataset.messageId, text(li)]),
    answers: pick(".assistant", (li) => [li.dataset.runId, li.dataset.status, text(li)]),
    pending: pick(".pending", text),
  };
}"""


def orm(fn: Callable[..., Any], *args: Any) -> Any:
    """Runs database code in a thread of its own: Playwright's sync API runs an event loop in
    the test's thread, and Django refuses ORM calls where a loop runs. The thread's connection
    is closed after the call (PostgreSQL cannot drop a test database that is still in use)."""

    def call() -> Any:
        try:
            return fn(*args)
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


@dataclass
class Shown:
    """What the page shows: user messages and answers, in transcript order."""

    users: list[tuple[str, str]]  # (message id, text)
    answers: list[tuple[str, str, str]]  # (run id, status, text)
    pending: list[str]  # texts still marked "sending..."


class DemoPage:
    def __init__(self, page, base_url: str):
        self.page = page
        self.base_url = base_url
        self.console: list[str] = []  # the page's console errors and warnings, for failure reports
        page.add_init_script(RECORD_STATES)
        page.set_default_timeout(30_000)

    def open(self, fragment: str = "") -> DemoPage:
        self.page.goto(self.base_url + "/" + fragment)
        return self

    def sign_in(self, username: str, password: str) -> DemoPage:
        page = self.page
        assert page.get_by_label("Username").input_value() == "demo"  # the demo user's name is prefilled
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        self.wait_state("connected")
        return self

    def send(self, text: str) -> None:
        self.page.get_by_label("Message").fill(text)
        self.page.get_by_role("button", name="Send").click()

    def badge(self) -> tuple[str, str]:
        badge = self.page.get_by_role("status")
        return badge.get_attribute("data-state"), badge.get_attribute("data-node")

    def wait_state(self, state: str, timeout: float = 30) -> str:
        """Waits until the badge shows `state`; returns the node it names."""
        self.page.wait_for_selector(f"#badge[data-state={state}]", timeout=timeout * 1000)
        return self.badge()[1]

    def wait_true(self, expression: str, timeout: float = 30) -> None:
        """Waits until the JavaScript `expression` is true in the page. Polled from here with
        `evaluate`: the page's Content-Security-Policy (no 'unsafe-eval') refuses Playwright's
        `wait_for_function`, which evaluates its predicate as a string in the page."""
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(expression):
            assert time.monotonic() < deadline, f"{expression} still false after {timeout}s"
            self.page.wait_for_timeout(50)

    def wait_answer_words(self, count: int, timeout: float = 30) -> None:
        """Waits until the newest answer on the page has at least `count` words."""
        self.wait_true(f"({LAST_ANSWER_WORDS})() >= {count}", timeout)

    def last_answer_words(self) -> int:
        return self.page.evaluate(LAST_ANSWER_WORDS)

    def wait_answers(self, count: int, statuses: str = "done", timeout: float = 60) -> None:
        """Waits until `count` answers have finished (status in `statuses`, comma-separated)."""
        selector = ", ".join(f"li.msg.assistant[data-status={s}]" for s in statuses.split(","))
        self.page.locator(selector).nth(count - 1).wait_for(timeout=timeout * 1000)

    def client_ids(self, conversation_id: str) -> list[str]:
        """The client_id of every socket the server saw on the conversation (all pages)."""
        rows = Connection.objects.filter(conversation_id=conversation_id).order_by("opened_at")
        return orm(lambda: list(rows.values_list("client_id", flat=True)))

    def conversation_id(self) -> str:
        return self.page.evaluate("window.tether.conversationId")

    def states(self) -> list[dict]:
        return self.page.evaluate("window.__states")

    def shown(self) -> Shown:
        data = self.page.evaluate(SHOWN)
        return Shown(
            users=[tuple(u) for u in data["users"]],
            answers=[tuple(a) for a in data["answers"]],
            pending=data["pending"],
        )

    def client_id(self) -> str:
        """This tab's client_id (the `by` of an approval it decided)."""
        return self.page.evaluate("window.tether.clientId")

    def cards(self) -> list[Card]:
        """The tool cards the page shows, in transcript order."""
        return [Card(*row) for row in self.page.evaluate(CARDS)]

    def card(self, call_id: str):
        return self.page.locator(f'.tool-card[data-call-id="{call_id}"]')

    def wait_card(self, status: str, timeout: float = 30) -> str:
        """Waits for a card with this status (`waiting`, `ok`, ...); returns its call_id."""
        card = self.page.locator(f".tool-card[data-status={status}]").first
        card.wait_for(timeout=timeout * 1000)
        return card.get_attribute("data-call-id")

    def wait_card_status(self, call_id: str, status: str, timeout: float = 30) -> None:
        self.page.locator(f'.tool-card[data-call-id="{call_id}"][data-status={status}]').wait_for(
            timeout=timeout * 1000)


# The cards, from the DOM: what a person sees, by the attributes the page draws them with.
CARDS = """() => [...document.querySelectorAll("#transcript .tool-card")].map((el) => [
  el.dataset.callId, el.dataset.runId, el.dataset.tool || null, el.dataset.effect || null,
  el.dataset.status, el.dataset.decision || null, el.dataset.by || null,
])"""


@dataclass(frozen=True)
class Card:
    """One tool call as a card shows it (or as the server's log says it should)."""

    call_id: str
    run_id: str
    tool: str | None
    effect: str | None  # known once the call is made (`agent.tool_call`)
    status: str  # ok, error, unknown, denied; before a result: running, waiting, approved
    decision: str | None  # approved, denied, expired (calls that needed an approval)
    by: str | None


PAGE_STATUS = {
    AgentRun.Status.COMPLETED: "done",
    AgentRun.Status.CANCELLED: "stopped",
    AgentRun.Status.FAILED: "failed",
}


def server_record(conversation_id: str) -> Shown:
    return orm(_server_record, conversation_id)


def _server_record(conversation_id: str) -> Shown:
    """The conversation as the server stored it, in the page's terms: the completed text of a
    finished run is the one its `agent.completed` event carries; a stopped run's text is what
    it had committed."""
    users = [
        (str(m.id), m.text)
        for m in Message.objects.filter(conversation_id=conversation_id, role=Message.Role.USER).order_by("seq")
    ]
    completed = {
        e.payload["run_id"]: e.payload["message"]["text"]
        for e in Event.objects.filter(conversation_id=conversation_id, type="agent.completed")
    }
    answers = [
        (str(run.id), PAGE_STATUS.get(run.status, "streaming"),
         completed[str(run.id)] if str(run.id) in completed else services.committed_text(run))
        for run in AgentRun.objects.filter(conversation_id=conversation_id).order_by("message__seq")
    ]
    return Shown(users=users, answers=answers, pending=[])


def assert_page_matches_server(page: DemoPage, conversation_id: str) -> Shown:
    """Nothing missing, nothing twice: the page shows exactly the server's messages and
    answers, in order, with the server's exact text (the completed text for finished runs)."""
    shown = page.shown()
    server = server_record(conversation_id)
    flagged = page.page.evaluate("[...document.querySelectorAll('[data-mismatch]')].map((li) => li.dataset.runId)")
    assert not flagged, f"deltas applied twice or out of order for runs {flagged}"
    assert shown.pending == [], f"messages still marked as sending: {shown.pending}"
    assert shown.users == server.users, f"user messages differ:\npage   {shown.users}\nserver {server.users}"
    assert [a[:2] for a in shown.answers] == [a[:2] for a in server.answers], (
        f"answers differ:\npage   {[a[:2] for a in shown.answers]}\nserver {[a[:2] for a in server.answers]}"
    )
    for (run_id, _, page_text), (_, _, server_text) in zip(shown.answers, server.answers, strict=True):
        assert page_text == server_text, (
            f"run {run_id}: the page shows {len(page_text)} characters, the server has {len(server_text)}\n"
            f"page:   {page_text[:200]!r}...\nserver: {server_text[:200]!r}..."
        )
    return shown


def assert_prefix_of_answer(page: DemoPage, n: int) -> int:
    """What the newest answer shows at this moment is the start of 'count n' (nothing twice,
    nothing skipped so far); returns its word count."""
    text = page.page.evaluate(LAST_ANSWER_TEXT)
    assert count_answer(n).startswith(text), f"the page shows {text[:300]!r}..."
    return len(text.split())


def count_answer(n: int) -> str:
    """The demo agent's answer to 'count n'."""
    return " ".join(f"w{i}" for i in range(1, n + 1))


def run_progress(conversation_id: str) -> int:
    """Words the server has committed for the conversation's newest run (deltas are coalesced,
    so their number says little about how far the answer got)."""

    def progress() -> int:
        run = AgentRun.objects.filter(conversation_id=conversation_id).order_by("-created_at").first()
        return len(services.committed_text(run).split()) if run else 0

    return orm(progress)


def wait_server(check, timeout: float = 30, what: str = "server condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# --- tool cards against the server's log ----------------------------------------------------


def server_events(base_url: str, username: str, password: str, conversation_id: str) -> list[dict]:
    """`GET /api/conversations/<id>/events/`, every page, as a client of the REST API signed
    in as the page's user."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        token = http.post("/api/auth/token/", json={"username": username, "password": password})
        token.raise_for_status()
        headers = {"Authorization": f"Bearer {token.json()['access']}"}
        events: list[dict] = []
        url: str | None = f"/api/conversations/{conversation_id}/events/?after_seq=0"
        while url:
            page = http.get(url, headers=headers)
            page.raise_for_status()
            body = page.json()
            events += body["results"]
            url = body["next"]
        return events


def cards_from_events(events: list[dict]) -> list[Card]:
    """The cards the log calls for (docs/protocol.md, "Tools and approvals"), one per call_id
    in the order the calls first appear; checked here against the rules the page must not
    break: one `agent.tool_result` per call_id, one `approval.resolved` per request."""
    calls: dict[str, dict] = {}
    for event in events:
        if event["type"] not in ("approval.requested", "approval.resolved", "agent.tool_call", "agent.tool_result"):
            continue
        call = calls.setdefault(event["call_id"], {"run_id": event["run_id"], "counts": {}})
        call["counts"][event["type"]] = call["counts"].get(event["type"], 0) + 1
        call.update({k: event[k] for k in ("tool", "effect", "status", "decision", "by", "reason") if k in event})
    cards = []
    for call_id, call in calls.items():
        counts = call["counts"]
        assert counts.get("agent.tool_result", 0) <= 1 and counts.get("approval.resolved", 0) <= 1, (call_id, counts)
        if "status" in call:
            status = call["status"]
        elif "agent.tool_call" in counts:
            status = "running"
        elif "approval.requested" in counts and "decision" not in call:
            status = "waiting"
        else:
            status = "approved" if call.get("decision") == "approved" else "denied"
        cards.append(Card(call_id, call["run_id"], call.get("tool"), call.get("effect"), status,
                          call.get("decision"), call.get("by")))
    return cards


def assert_cards_match_server(page: DemoPage, base_url: str, username: str, password: str,
                              conversation_id: str) -> list[Card]:
    """The page's cards equal what the server's log says: the same calls (ids), in order, each
    with its tool, effect, status, decision and who decided."""
    expected = cards_from_events(server_events(base_url, username, password, conversation_id))
    shown = page.cards()
    assert shown == expected, f"cards differ:\npage   {shown}\nserver {expected}"
    return shown
