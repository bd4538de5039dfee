"""Every connect logs how long each of its phases took, at DEBUG on `realtime.phases`, once
its replay is sent (issue 12: where a resume spends its time)."""

from __future__ import annotations

import logging
import re

import pytest
from channels.db import database_sync_to_async

from realtime.connection.phase_timer import PhaseTimer
from sessions_app import services
from tests.support.waiting import eventually
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)

PHASES = ["token", "limits", "join", "open_session", "ready", "replay"]


@pytest.mark.pure
def test_durations_are_the_time_between_marks():
    timer = PhaseTimer(10.0)
    timer.mark("token", 10.001)
    timer.mark("open_session", 10.005)
    assert timer.durations_ms() == {"token": 1.0, "open_session": 4.0}


async def test_a_resume_logs_each_phase_once_its_replay_is_sent(node_app, user, token, caplog):
    caplog.set_level(logging.DEBUG, logger="realtime.phases")
    conversation = await database_sync_to_async(services.create_conversation)(user.pk)
    for i in range(3):
        await database_sync_to_async(services.append_event)(conversation.pk, "note", {"i": i})
    client = WSClient(node_app)
    await client.connect(token, conversation_id=str(conversation.pk), last_seq=1)
    assert [(await client.recv())["seq"] for _ in range(2)] == [2, 3]

    async def logged():
        return [r.getMessage() for r in caplog.records if r.name == "realtime.phases"]

    [line] = await eventually(logged, timeout=5, what="the phase line")
    phases = line.split("): ", 1)[1].split("; total", 1)[0]
    assert re.findall(r"(\w+) [\d.]+", phases) == PHASES, line
    assert f"; 2 events; conversation {conversation.pk}" in line
    await client.drop()
