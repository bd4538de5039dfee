"""REST input that once broke the API (issue 9, item 8): non-ASCII digits in `after_seq`
were a 500, and `?limit=` had no ceiling."""

import uuid

import pytest

from sessions_app import services
from tests.test_rest_api import api

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("raw", ["²", "٣", "１", "3²", " 1", "1 ", "+1", "99999999999999999999999"])
def test_after_seq_accepts_only_ascii_digits(user, raw):
    conversation = services.create_conversation(user.pk)
    services.post_user_message(conversation.pk, uuid.uuid4(), "hello")
    response = api(user).get(f"/api/conversations/{conversation.pk}/events/", {"after_seq": raw})
    assert response.status_code == 400, (raw, response.status_code)
    assert response.json() == {"after_seq": ["must be a non-negative integer"]}


def test_limit_is_capped_at_api_max_page_size(user, settings):
    settings.API_MAX_PAGE_SIZE = 3
    conversation = services.create_conversation(user.pk)
    for i in range(5):
        services.post_user_message(conversation.pk, uuid.uuid4(), f"m{i}")
    for endpoint in ("events", "messages"):
        page = api(user).get(f"/api/conversations/{conversation.pk}/{endpoint}/?limit=100000").json()
        assert page["count"] == 5
        assert [r["seq"] for r in page["results"]] == [1, 2, 3], endpoint
        assert "offset=3" in page["next"] and "limit=3" in page["next"]


def test_api_errors_are_json_even_for_urls_django_cannot_route(user):
    """Found by the schemathesis run: a conversation id that is no UUID got Django's HTML 404,
    a malformed multipart body an empty 400. The API speaks JSON only."""
    response = api(user).get("/api/conversations/null,null/events/")
    assert (response.status_code, response.json()) == (404, {"detail": "Not found."})
    assert api(user).get("/no-such-page/").status_code == 404  # outside /api/: Django's page
    form = api(user).post("/api/conversations/", "--x--\r\n", content_type="multipart/form-data; boundary=x")
    assert form.status_code == 415 and form["Content-Type"] == "application/json"


@pytest.mark.parametrize("param,raw,error", [
    ("limit", "-1", "must be a positive integer"),
    ("limit", "abc", "must be a positive integer"),
    ("limit", "0", "must be a positive integer"),
    ("limit", "", "must be a positive integer"),
    ("limit", "²", "must be a positive integer"),
    ("offset", "-1", "must be a non-negative integer"),
    ("offset", "x", "must be a non-negative integer"),
])
def test_limit_and_offset_are_strict_like_after_seq(user, param, raw, error):
    """Issue 23: `?limit=-1` and `?limit=abc` quietly answered the default page."""
    conversation = services.create_conversation(user.pk)
    services.post_user_message(conversation.pk, uuid.uuid4(), "hello")
    for path in ("/api/conversations/", f"/api/conversations/{conversation.pk}/messages/",
                 f"/api/conversations/{conversation.pk}/events/"):
        response = api(user).get(path, {param: raw})
        assert (response.status_code, response.json()) == (400, {param: [error]}), (path, raw)


def test_a_valid_limit_and_offset_still_page(user):
    conversation = services.create_conversation(user.pk)
    for i in range(3):
        services.post_user_message(conversation.pk, uuid.uuid4(), f"m{i}")
    page = api(user).get(f"/api/conversations/{conversation.pk}/messages/", {"limit": "1", "offset": "1"}).json()
    assert [m["text"] for m in page["results"]] == ["m1"] and page["count"] == 3
