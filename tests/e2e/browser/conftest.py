"""Browser tests: Chromium (Debian's, through Playwright) on the demo page, against real
daphne nodes sharing the test database (PostgreSQL in CI) and Redis. Without Chromium or the
`playwright` package a local run skips them with the reason; under CI=true they fail instead
(tests/support/tools.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from tests.support.daphne_nodes import DaphneNode
from tests.support.demo_page import CHROMIUM_ARGS, DemoPage, orm
from tests.support.sdk_chat import FAST_NODE_ENV
from tests.support.tools import chromium_or_skip

# The e2e deploy settings (short leases, sweeps, drain grace) plus a demo agent slow enough
# for a fault to land mid-answer: 'count 200' streams for about 4 s.
NODE_ENV = {**FAST_NODE_ENV, "REALTIME_DEMO_AGENT_DELAY_MS": 20}
PASSWORD = "browser-pw-123"


@pytest.fixture
def chromium():
    """A headless Chromium for one test (closed even when the test fails)."""
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Site:
    nodes: list[DaphneNode]
    username: str
    password: str

    @property
    def url(self) -> str:
        """The page is served by the first node."""
        return self.url_of(0)

    def url_of(self, index: int) -> str:
        return f"http://127.0.0.1:{self.nodes[index].port}"

    def node(self, node_id: str) -> DaphneNode:
        return next(n for n in self.nodes if n.node_id == node_id)


@pytest.fixture
def site(daphne_cluster, django_user_model):
    """Factory: `site(nodes=2, **env)` starts daphne nodes and makes a user with a password."""

    def make(nodes: int = 2, **env) -> Site:
        tag = uuid.uuid4().hex[:6]
        started = [daphne_cluster(f"web-{tag}-{i}", **{**NODE_ENV, **env}) for i in range(nodes)]
        username = f"browser-{tag}"
        orm(lambda: django_user_model.objects.create_user(username=username, password=PASSWORD))
        return Site(started, username, PASSWORD)

    return make


@pytest.fixture
def open_page(chromium, request):
    """Factory: a new browser context (a separate browser profile) with one demo page tab. When
    the test failed, each page's client states, badge and transcript are printed."""
    contexts = []
    pages: list[DemoPage] = []

    def make(site: Site, fragment: str = "", context=None, node: int = 0) -> DemoPage:
        if context is None:
            context = chromium.new_context(viewport={"width": 1000, "height": 800})
            contexts.append(context)
        page = DemoPage(context.new_page(), site.url_of(node))
        pages.append(page)
        page.page.on("console", lambda m: m.type in ("error", "warning") and page.console.append(m.text))
        page.page.on("pageerror", lambda e: page.console.append(f"pageerror: {e}"))
        return page.open(fragment)

    yield make
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for i, page in enumerate(pages):
            try:
                print(f"--- page {i}: badge {page.badge()}, console {page.console}")
                for state in page.states():
                    print(f"    {state}")
                print(f"    shown: {page.shown()}")
            except Exception as exc:  # noqa: BLE001 - a closed page cannot say more
                print(f"--- page {i}: {exc!r}")
    for context in contexts:
        context.close()
