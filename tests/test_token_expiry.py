"""An access token that is not renewed: `auth.expiring`, then `token_expired` and 4401 at
expiry; a resume with a fresh token delivers everything committed in between, once."""

import time
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from rest_framework_simplejwt.tokens import AccessToken

from sessions_app.models import AgentRun, Connection, Conversation
from tests.support.waiting import eventually
from tests.support.ws import WSClient, assert_gapless, run_text, sequenced

pytestmark = pytest.mark.django_db(transaction=True)


def token_valid_for(user, seconds: float) -> str:
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=seconds))
    return str(token)


@pytest.fixture(autouse=True)
def quick_expiry(settings):
    settings.REALTIME_TOKEN_WARNING = 1.0
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 30


async def test_expiry_without_refresh_closes_4401_then_resume_delivers_the_gap(cluster, user):
    _, app = cluster("node-1")
    client = WSClient(app)
    ready = await client.connect(token_valid_for(user, 2))
    conversation_id = ready["conversation_id"]
    await client.message("count 80")  # ~2.4 s: still streaming when the token expires

    frames, code = await client.expect_close(timeout=5)
    closed_at = time.time()
    assert code == 4401
    kinds = [f["type"] for f in frames]
    assert kinds.index("auth.expiring") < kinds.index("error")
    expiring = frames[kinds.index("auth.expiring")]
    assert expiring["access_expires_at"] == ready["access_expires_at"]
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "token_expired"
    assert abs(closed_at - ready["access_expires_at"]) < 1.0, "closed at expiry, not before or long after"
    applied = max(f["seq"] for f in sequenced(frames))
    await client.drop()

    # Meanwhile another socket of the same user talks in the conversation.
    other = WSClient(app)
    await other.connect(token_valid_for(user, 300), conversation_id=conversation_id, last_seq=applied)
    await other.converse("hello")
    await other.drop()

    def all_runs_done():
        return not AgentRun.objects.filter(conversation_id=conversation_id).exclude(status="completed").exists()

    await eventually(database_sync_to_async(all_runs_done), timeout=15, what="runs completed")
    last_seq = (await database_sync_to_async(Conversation.objects.get)(pk=conversation_id)).last_seq

    back = WSClient(app)
    resumed = await back.connect(token_valid_for(user, 300), conversation_id=conversation_id, last_seq=applied)
    assert resumed["resumed"] is True
    rest = await back.recv_until(lambda f: f.get("seq") == last_seq)
    await back.assert_silent()
    assert_gapless(rest, after=applied)
    whole = frames + rest
    assert_gapless(whole)
    first_run = next(f for f in whole if f["type"] == "agent.started")["run_id"]
    assert run_text(whole, first_run) == " ".join(f"w{i}" for i in range(1, 81))
    assert sum(f["type"] == "agent.completed" for f in whole) == 2

    # The expired socket's row is closed by its consumer's disconnect, which may still be under
    # way here on a loaded machine: wait for it rather than read it once.
    def first_row_closed():
        rows = list(Connection.objects.filter(conversation_id=conversation_id).order_by("opened_at"))
        return rows[0] if rows and rows[0].closed_at is not None else None

    first = await eventually(database_sync_to_async(first_row_closed), timeout=10, what="the expired socket's row")
    assert (first.close_code, first.close_reason) == (4401, "token_expired")
    await back.drop()
