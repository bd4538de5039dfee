"""Conversations are titled from their first message (issue 23), as every chat product does:
the REST `title` of an untitled conversation becomes the first line of its first user
message, cut at a word; a title given at creation, or by an earlier message, is kept."""

from __future__ import annotations

import uuid

import pytest

from sessions_app import services
from sessions_app.models import Conversation
from sessions_app.services.conversations import TITLE_CHARS, title_from
from tests.test_rest_api import api

pytestmark = pytest.mark.django_db


def test_an_untitled_conversation_takes_its_first_message_as_title(user):
    conversation = api(user).post("/api/conversations/", {}, content_type="application/json").json()
    assert conversation["title"] == ""
    services.post_user_message(conversation["id"], uuid.uuid4(), "count 300")
    services.post_user_message(conversation["id"], uuid.uuid4(), "my name is Ada")
    assert api(user).get(f"/api/conversations/{conversation['id']}/").json()["title"] == "count 300"
    [listed] = api(user).get("/api/conversations/").json()["results"]
    assert listed["title"] == "count 300"


def test_a_title_given_at_creation_is_kept(user):
    conversation = services.create_conversation(user.pk, "Planning")
    services.post_user_message(conversation.pk, uuid.uuid4(), "count 3")
    assert Conversation.objects.get(pk=conversation.pk).title == "Planning"


def test_a_resent_first_message_titles_once(user):
    conversation = services.create_conversation(user.pk)
    msg = uuid.uuid4()
    services.post_user_message(conversation.pk, msg, "hello there")
    services.post_user_message(conversation.pk, msg, "hello there")  # duplicate: no second write
    assert Conversation.objects.get(pk=conversation.pk).title == "hello there"


def test_a_blank_first_message_leaves_the_title_to_the_next_one_only_if_it_is_first(user):
    conversation = services.create_conversation(user.pk)
    services.post_user_message(conversation.pk, uuid.uuid4(), "   ")
    services.post_user_message(conversation.pk, uuid.uuid4(), "second")
    # "second" is not the first message: the conversation stays untitled.
    assert Conversation.objects.get(pk=conversation.pk).title == ""


@pytest.mark.pure
@pytest.mark.parametrize("text,title", [
    ("count 300", "count 300"),
    ("\n\n  my   name\tis Ada  \nsecond line", "my name is Ada"),
    ("x" * 100, "x" * (TITLE_CHARS - 1) + "…"),
    ("word " * 30, ("word " * 12).rstrip() + "…"),
    ("abc " * 14 + "defghijklmnop", ("abc " * 14).rstrip() + "…"),
    ("", ""),
])
def test_title_from_text(text, title):
    assert title_from(text) == title
    assert len(title) <= TITLE_CHARS
