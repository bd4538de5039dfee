"""Production HTTP hardening (issue 24, item 2): `manage.py check --deploy` is clean with the
production settings (CI runs it too, .ci/run); HSTS, Secure cookies, the proxy's HTTPS header
and the HTTPS redirect are on by default in production; every page carries a
Content-Security-Policy with `script-src 'self'` and no 'unsafe-inline', the demo page's
importmap and the Swagger UI page's inline style allowed by their hashes only. (That the
browser runs these pages without a violation: tests/e2e/browser/test_browser_csp.py.)"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys

import pytest
from django.test import Client

from tests.support.daphne_nodes import ROOT

PRODUCTION = {"TETHER_PRODUCTION": "1", "SECRET_KEY": secrets.token_urlsafe(50),
              "JWT_SIGNING_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "tether.example.com"}


def _production(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "SESSION_", "CSRF_", "DJANGO_DEBUG"))}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env={**env, **PRODUCTION}, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.pure
def test_check_deploy_is_clean_with_production_settings():
    result = _production("manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (2 silenced)." in result.stdout


@pytest.mark.pure
def test_production_defaults():
    code = ("import django, json; django.setup(); from django.conf import settings as s; print(json.dumps(["
            "s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, "
            "s.SECURE_PROXY_SSL_HEADER, s.DEBUG]))")
    result = _production("-c", code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [31536000, True, True, True, ["HTTP_X_FORWARDED_PROTO", "https"], False]


@pytest.fixture
def production_http(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    return settings


@pytest.mark.django_db
def test_behind_the_tls_proxy_https_gets_hsts_and_plain_http_is_redirected(production_http):
    secure = Client().get("/healthz", HTTP_X_FORWARDED_PROTO="https")
    assert secure["Strict-Transport-Security"] == "max-age=31536000"
    plain = Client().get("/api/conversations/")
    assert plain.status_code == 301 and plain["Location"] == "https://testserver/api/conversations/"
    # The balancer's health check and Prometheus call the node itself over plain HTTP.
    assert Client().get("/healthz").status_code == 200
    assert Client().get("/metrics").status_code == 200


def _csp(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in header.split("; ")}


def _sha256(text: bytes) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text).digest()).decode() + "'"


@pytest.mark.django_db
def test_the_demo_page_allows_its_own_importmap_and_nothing_inline_else():
    response = Client().get("/")
    csp = _csp(response)
    inline = re.findall(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", response.content, re.S)
    assert inline, "the demo page has an importmap"
    assert csp["script-src"] == ["'self'", *sorted(_sha256(body) for body in set(inline))]
    assert csp["style-src"] == ["'self'"]
    assert csp["object-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    assert csp["connect-src"] == ["'self'", "ws:", "wss:"]
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]


@pytest.mark.django_db
def test_the_admin_and_swagger_ui_run_under_script_src_self(admin_user):
    client = Client()
    login = client.get("/admin/login/")
    assert _csp(login)["script-src"] == ["'self'"]
    assert login["X-Frame-Options"] == "DENY"
    client.force_login(admin_user)
    assert _csp(client.get("/admin/"))["script-src"] == ["'self'"]
    docs = client.get("/api/docs/")
    csp = _csp(docs)
    assert csp["script-src"] == ["'self'"]
    assert b"<script>" not in docs.content  # the UI's own script is a file: ?script
    styles = re.findall(rb"<style[^>]*>(.*?)</style>", docs.content, re.S)
    assert csp["style-src"] == ["'self'", *sorted(_sha256(s) for s in styles)]
    script = client.get("/api/docs/?script")
    assert script.status_code == 200 and b"SwaggerUIBundle" in script.content
