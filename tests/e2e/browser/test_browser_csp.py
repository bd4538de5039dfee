"""The Content-Security-Policy holds in a real browser (issue 24, item 2): Chromium loads the
demo page (signs in, connects, gets an answer), the admin (signs in, a change list with its
actions) and the Swagger UI (renders the schema), and reports no violation at all. A policy
that blocked the importmap, an admin script or the Swagger UI's own script fails here."""

from __future__ import annotations

import pytest

from tests.support.demo_page import DemoPage, orm

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));
"""


def test_the_pages_run_under_the_policy_without_a_violation(site, chromium, django_user_model):
    s = site(nodes=1)
    orm(lambda: django_user_model.objects.create_superuser("csp-admin", "admin@example.com", "csp-admin-pw-2024"))
    context = chromium.new_context(viewport={"width": 1000, "height": 800})
    try:
        page = context.new_page()
        page.add_init_script(RECORD_VIOLATIONS)
        console: list[str] = []
        page.on("console", lambda m: "Content Security Policy" in m.text and console.append(m.text))
        seen: list[str] = []

        def violations() -> list[str]:
            return page.evaluate("window.__violations")

        demo = DemoPage(page, s.url).open()
        assert page.evaluate("document.querySelector('script[type=importmap]') !== null")
        demo.sign_in(s.username, s.password)
        demo.send("hello")
        demo.wait_answers(1)
        seen += violations()

        page.goto(f"{s.url}/admin/login/")
        page.get_by_label("Username").fill("csp-admin")
        page.get_by_label("Password").fill("csp-admin-pw-2024")
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{s.url}/admin/")
        page.goto(f"{s.url}/admin/auth/user/")
        page.get_by_role("checkbox").first.check()  # the admin's actions script runs
        page.wait_for_selector("#action-toggle")
        seen += violations()

        page.goto(f"{s.url}/api/docs/")
        page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
        assert "Tether REST API" in page.inner_text(".swagger-ui .info .title")
        seen += violations()
        assert seen == [] and console == [], (seen, console)
    finally:
        context.close()
