"""CORS on the REST API follows the socket's allowed origins (issue 23, item 5): one setting,
REALTIME_ALLOWED_ORIGINS (default: the hosts of ALLOWED_HOSTS), one rule
(realtime.connection.origin.origin_allowed), applied through django-cors-headers. A page from
another origin that may open a socket may also sign in and call the API; one that may not gets
no CORS headers, so the browser refuses it both. tests/e2e/browser/test_browser_other_origin.py
runs a page on a second port for real."""

from __future__ import annotations

import pytest
from django.test import Client

from realtime.connection.origin import origin_allowed

pytestmark = pytest.mark.django_db

PAGE = "http://127.0.0.1:5173"
OTHER = "http://evil.example"


def preflight(origin: str, path: str = "/api/auth/token/"):
    return Client().options(path, HTTP_ORIGIN=origin, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
                            HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type")


def test_a_listed_origin_gets_cors_on_the_api(settings):
    settings.REALTIME_ALLOWED_ORIGINS = [PAGE, "http://127.0.0.1:8000"]
    response = preflight(PAGE)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == PAGE
    assert {"authorization", "content-type"} <= set(response["Access-Control-Allow-Headers"].split(", "))
    assert "POST" in response["Access-Control-Allow-Methods"]
    listed = Client().get("/api/realtime/nodes/", HTTP_ORIGIN=PAGE)  # 401 without a token, still CORS
    assert listed["Access-Control-Allow-Origin"] == PAGE


def test_an_origin_not_listed_gets_none(settings):
    settings.REALTIME_ALLOWED_ORIGINS = [PAGE]
    for origin in (OTHER, "http://127.0.0.1:5174", "https://127.0.0.1:5173"):
        assert "Access-Control-Allow-Origin" not in preflight(origin), origin
        assert "Access-Control-Allow-Origin" not in Client().get("/api/realtime/nodes/", HTTP_ORIGIN=origin)


def test_by_default_the_hosts_of_allowed_hosts_on_any_port(settings):
    settings.REALTIME_ALLOWED_ORIGINS = []
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
    assert preflight("http://localhost:5173")["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert "Access-Control-Allow-Origin" not in preflight(OTHER)


def test_star_allows_any(settings):
    settings.REALTIME_ALLOWED_ORIGINS = ["*"]
    assert preflight(OTHER)["Access-Control-Allow-Origin"] == OTHER


def test_only_the_api_speaks_cors(settings):
    settings.REALTIME_ALLOWED_ORIGINS = ["*"]
    assert "Access-Control-Allow-Origin" not in Client().get("/admin/login/", HTTP_ORIGIN=PAGE)
    assert "Access-Control-Allow-Origin" not in Client().get("/", HTTP_ORIGIN=PAGE)


@pytest.mark.parametrize("allowed", [[], [PAGE], ["*"], [PAGE + "/"]])
@pytest.mark.parametrize("origin", [PAGE, OTHER, "http://localhost:9", "null", "file://"])
def test_the_socket_and_the_api_always_agree(settings, allowed, origin):
    settings.REALTIME_ALLOWED_ORIGINS = allowed
    cors = preflight(origin).get("Access-Control-Allow-Origin") == origin
    assert cors == origin_allowed(origin), (allowed, origin)
