"""The REST API's OpenAPI 3 schema: it validates, every view is described, the committed
docs/openapi.yaml is exactly what the code generates, and /api/schema/ and the offline
Swagger UI at /api/docs/ are served (the UI's files from this server, no CDN)."""

import re
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db

COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"


def _generated(tmp_path) -> str:
    out = tmp_path / "openapi.yaml"
    # --validate checks the result against the OpenAPI 3 JSON schema; --fail-on-warn turns
    # every view drf-spectacular cannot describe into an error.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    return out.read_text()


def test_schema_validates_and_matches_the_committed_file(tmp_path):
    generated = _generated(tmp_path)
    assert generated == COMMITTED.read_text(), (
        "docs/openapi.yaml is stale: regenerate it with "
        "`python manage.py spectacular --validate --fail-on-warn --file docs/openapi.yaml`"
    )


def _drf_routes() -> set[str]:
    routes = set()

    def walk(patterns, prefix=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern) and hasattr(p.callback, "cls") and prefix + str(p.pattern) != "":
                route = prefix + str(p.pattern)
                if route.startswith("api/") and not route.startswith(("api/schema", "api/docs")):
                    routes.add("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route))

    walk(get_resolver().url_patterns)
    return routes


def test_every_api_view_is_described():
    schema = yaml.safe_load(COMMITTED.read_text())
    routes = _drf_routes()
    assert "/api/conversations/{conversation_id}/events/" in routes and "/api/realtime/nodes/" in routes
    assert routes == set(schema["paths"]), routes ^ set(schema["paths"])
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert operation.get("description"), f"{method.upper()} {path} has no description"
            assert "200" in operation["responses"] or "201" in operation["responses"], (method, path)
    nodes = schema["paths"]["/api/realtime/nodes/"]["get"]["responses"]
    assert {"200", "401", "503"} <= set(nodes)
    events = schema["paths"]["/api/conversations/{conversation_id}/events/"]["get"]
    assert "after_seq" in [p["name"] for p in events["parameters"]]


def test_schema_and_offline_swagger_ui_are_served():
    served = Client().get("/api/schema/")
    assert served.status_code == 200
    assert yaml.safe_load(served.content) == yaml.safe_load(COMMITTED.read_text())
    page = Client().get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/") for a in assets), assets  # nothing from a CDN
    for asset in assets:
        assert Client().get(asset).status_code == 200, asset
