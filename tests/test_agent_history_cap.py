"""A run hands its agent at most REALTIME_AGENT_HISTORY_MESSAGES of the conversation's latest
messages, its own included and oldest first (issue 24, item 7): a long conversation no longer
sends (and pays for) its whole history on every run."""

import uuid

import pytest

from sessions_app import services
from sessions_app.models import AgentRun

pytestmark = pytest.mark.django_db


def test_a_run_sees_only_the_latest_messages_up_to_its_own(settings, user):
    settings.REALTIME_AGENT_HISTORY_MESSAGES = 3
    conversation = services.create_conversation(user.pk)
    for i in range(1, 6):
        services.post_user_message(conversation.pk, uuid.uuid4(), f"m{i}")
    runs = list(AgentRun.objects.filter(conversation=conversation).order_by("message__seq"))
    assert [h["text"] for h in services.load_run_context(runs[4].pk).history] == ["m3", "m4", "m5"]
    assert [h["text"] for h in services.load_run_context(runs[1].pk).history] == ["m1", "m2"]
    settings.REALTIME_AGENT_HISTORY_MESSAGES = 100
    assert len(services.load_run_context(runs[4].pk).history) == 5
