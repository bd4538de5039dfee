"""Issue 21 with the Python SDK against a real daphne node: the demo agent's `transfer N`
waits for an approval; a second device of the same user approves it (`client.approve`), the
first one's late `deny` gets `already_decided` with the decision that stands, and an unknown
call or another user's answer gets `not_found`; no answer closes any socket. Both devices see
the same typed events (`ApprovalRequested`, `ApprovalResolved` by the approving client,
`AgentToolCall`, `AgentToolResult`) once each, and the answer ends with `transferred N`."""

from __future__ import annotations

import uuid

import pytest
from channels.db import database_sync_to_async
from tether_client import (
    AgentCompleted,
    AgentToolCall,
    AgentToolResult,
    ApprovalRequested,
    ApprovalResolved,
    Disconnected,
    ServerError,
)

from sessions_app.models import Approval
from tests.support.sdk_chat import FAST_NODE_ENV, ChatSession, user_tokens, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _of(session: ChatSession, kind: type) -> list:
    return [event for _, event in session.log if isinstance(event, kind)]


def _same_user_tokens() -> tuple[str, str, str]:
    from django.contrib.auth import get_user_model

    from tests.conftest import access_for

    owner = get_user_model().objects.create(username=f"approver-{uuid.uuid4().hex[:6]}")
    return access_for(owner), access_for(owner), user_tokens(1, "stranger")[0]


async def test_a_second_device_approves_with_the_sdk_and_late_or_foreign_answers_are_refused(daphne_cluster):
    node = daphne_cluster("approvals", **FAST_NODE_ENV)
    await wait_ready(node)
    phone_token, laptop_token, stranger_token = await database_sync_to_async(_same_user_tokens)()
    laptop = ChatSession.open([node.ws_url], laptop_token, name="laptop", client_id="laptop-1")
    stranger = ChatSession.open([node.ws_url], stranger_token, name="stranger", client_id="stranger-1")
    phone = None
    try:
        await laptop.client.wait_connected(10)
        await stranger.client.wait_connected(10)
        asked = await laptop.send("transfer 5")
        requested = await laptop.wait_for(lambda: _of(laptop, ApprovalRequested), 15, "approval.requested")
        call_id = requested[0].call_id
        assert (requested[0].tool, requested[0].arguments, requested[0].reason) == ("demo.transfer", {"n": 5},
                                                                                    "policy")
        # The other device opens the same conversation and answers first.
        phone = ChatSession.open([node.ws_url], phone_token, name="phone", client_id="phone-1",
                                 conversation_id=laptop.client.conversation_id, last_seq=0)
        await phone.wait_for(lambda: _of(phone, ApprovalRequested), 10, "the request, replayed")
        assert await phone.client.approve(call_id) is True
        answer = await laptop.wait_answer(asked, 30)
        assert answer.message.text.endswith("transferred 5")

        assert await laptop.client.deny(call_id) is True  # too late
        assert await laptop.client.respond_approval(str(uuid.uuid4()), "approve") is True  # no such call
        assert await stranger.client.approve(call_id) is True  # not the stranger's conversation
        refusals = await laptop.wait_for(lambda: len(_of(laptop, ServerError)) == 2 and _of(laptop, ServerError),
                                         10, "two refusals")
        assert [(e.code, e.ref == call_id, e.decision) for e in refusals] == [
            ("already_decided", True, "approved"), ("not_found", False, None)]
        refused = await stranger.wait_for(lambda: _of(stranger, ServerError), 10, "the stranger's refusal")
        assert [(e.code, e.ref, e.decision) for e in refused] == [("not_found", call_id, None)]

        await phone.wait_for(lambda: _of(phone, AgentCompleted), 10, "the answer on the phone")
        for device in (laptop, phone):
            assert device.problems == [], device.name
            resolved = _of(device, ApprovalResolved)
            assert [(e.call_id, e.decision, e.by) for e in resolved] == [(call_id, "approved", "phone-1")]
            assert [(e.call_id, e.effect) for e in _of(device, AgentToolCall)] == [(call_id, "once")]
            results = _of(device, AgentToolResult)
            assert [(e.call_id, e.status, e.result) for e in results] == [(call_id, "ok", {"n": 5, "simulated": True})]
            assert [e.call_id for e in _of(device, ApprovalRequested)] == [call_id]
        # Nothing closed a socket: one connect each, no loss.
        for device in (laptop, phone, stranger):
            assert not [e for e in _of(device, Disconnected)], device.name
            assert device.client.connected, device.name
        approval = await database_sync_to_async(Approval.objects.get)(call_id=call_id)
        assert (approval.status, approval.decided_by) == ("approved", "phone-1")
    finally:
        for session in (laptop, stranger, phone):
            if session is not None:
                await session.close()
