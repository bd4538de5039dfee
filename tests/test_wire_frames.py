"""A replay sends the log's frames as the database encoded them (services.frames_after: jsonb
on PostgreSQL, Python's JSON on SQLite): the same frames, field for field, as the events."""

from __future__ import annotations

import json

import pytest

from sessions_app import services

pytestmark = pytest.mark.django_db


def test_frames_after_are_the_events_encoded(user):
    conversation = services.create_conversation(user.pk)
    services.post_user_message(conversation.pk, "00000000-0000-0000-0000-0000000000aa", "héllo \"quoted\" 🚀\n")
    services.append_event(conversation.pk, "note", {"n": 1, "nested": {"list": [1, 2.5, None, True]}, "text": ""})
    services.append_event(conversation.pk, "agent.delta", {"run_id": None, "index": 0, "text": "x" * 3000})
    events = services.events_after(conversation.pk, 0)
    frames = services.frames_after(conversation.pk, 0)
    assert [seq for seq, _ in frames] == [e["seq"] for e in events] == [1, 2, 3]
    assert [json.loads(text) for _, text in frames] == events
    assert services.frames_after(conversation.pk, 1, 2) == frames[1:2]
    assert services.frames_after(conversation.pk, 0, limit=2) == frames[:2]
