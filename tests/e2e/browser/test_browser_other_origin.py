"""The JavaScript client used from a page on another origin (issue 23, item 5): the example page
clients/js/examples/other-origin.html, served from a second port, imports the client from the
node, signs in and discovers nodes over the REST API (CORS) and streams an answer over the
socket (Origin check) when its origin is in REALTIME_ALLOWED_ORIGINS; a page on a third port,
not listed, is refused and says which setting to check."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.daphne_nodes import free_port
from tests.support.demo_page import count_answer

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EXAMPLES = Path(__file__).resolve().parents[3] / "clients" / "js" / "examples"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def static_origin() -> Iterator[callable]:
    """Factory: serves clients/js/examples/ on a port of its own; returns its origin."""
    servers: list[ThreadingHTTPServer] = []

    def start(port: int) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(QuietHandler, directory=str(EXAMPLES)))
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_page_on_a_listed_origin_uses_the_client_and_one_not_listed_is_refused(site, chromium, static_origin):
    listed_port, unlisted_port = free_port(), free_port()
    listed = static_origin(listed_port)
    unlisted = static_origin(unlisted_port)
    s = site(nodes=1, REALTIME_ALLOWED_ORIGINS=listed)
    server = s.url_of(0)

    context = chromium.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{listed}/other-origin.html?server={server}")
        page.get_by_label("Username").fill(s.username)
        page.get_by_label("Password").fill(s.password)
        page.get_by_label("Message").fill("count 25")
        page.get_by_role("button", name="Ask").click()
        page.wait_for_function("document.body.dataset.completed !== undefined", timeout=30_000)
        assert page.locator("#answer").text_content() == count_answer(25)
        assert page.evaluate("document.body.dataset.completed") == count_answer(25)
        assert page.locator("#error").text_content() == "" and not errors, errors

        refused = context.new_page()
        refused.goto(f"{unlisted}/other-origin.html?server={server}")
        refused.get_by_label("Username").fill(s.username)
        refused.get_by_label("Password").fill(s.password)
        refused.get_by_role("button", name="Ask").click()
        refused.wait_for_function("document.getElementById('error').textContent !== ''", timeout=15_000)
        assert f"is {unlisted} in the server's REALTIME_ALLOWED_ORIGINS?" in refused.locator("#error").text_content()
    finally:
        context.close()
