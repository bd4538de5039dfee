"""A client that reconnects while its old socket still looks alive (a zombie) replaces it at
once: the old socket gets `replaced` and 4409, the new one resumes without loss, on the same
node or on another one."""

import pytest
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings as django_settings

from realtime import ratelimit
from sessions_app.models import Connection
from tests.support.waiting import eventually
from tests.support.ws import WSClient, assert_gapless, run_text, sequenced

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("other_node", [False, True], ids=["same-node", "other-node"])
async def test_reconnect_with_same_client_id_replaces_the_zombie(settings, cluster, token, other_node):
    settings.REALTIME_DEMO_AGENT_DELAY_MS = 10
    _, app1 = cluster("node-1")
    _, app2 = cluster("node-2", run_agents=False) if other_node else (None, app1)
    old = WSClient(app1)
    ready = await old.connect(token, client_id="phone-1")
    await old.message("count 60")
    seen = await old.recv_until(lambda f: f["type"] == "agent.delta" and f["index"] >= 2)
    applied = max(f["seq"] for f in sequenced(seen))

    new = WSClient(app2)
    resumed = await new.connect(token, conversation_id=ready["conversation_id"], last_seq=applied, client_id="phone-1")
    assert resumed["resumed"] is True

    frames, code = await old.expect_close(timeout=5)
    assert code == 4409 and frames[-1]["code"] == "replaced"
    rest = await new.recv_until(lambda f: f["type"] == "agent.completed")
    assert_gapless(rest, after=applied)
    run_id = next(f["run_id"] for f in seen if f["type"] == "agent.started")
    # What the client applied before plus what the new socket brought: the whole answer once.
    whole = [f for f in sequenced(old.frames) if f["seq"] <= applied] + sequenced(rest)
    assert run_text(whole, run_id) == rest[-1]["message"]["text"] == " ".join(f"w{i}" for i in range(1, 61))
    await old.drop()

    def rows():
        return list(Connection.objects.filter(client_id="phone-1").order_by("opened_at")
                    .values_list("close_code", "close_reason", "closed_at"))

    got = await eventually(lambda: _closed_first(rows), timeout=5, what="old row closed")
    assert got[0][:2] == (4409, "replaced") and got[1][2] is None
    await new.drop()


async def _closed_first(rows):
    got = await database_sync_to_async(rows)()
    return got if len(got) == 2 and got[0][2] is not None else None


async def test_a_replaced_socket_closing_on_its_own_keeps_its_successors_slot(cluster, user, token, monkeypatch):
    """The replaced socket drops before `conn.replaced` reaches it (here the message is lost):
    its release must not free the slot its successor now holds (issue 9, item 11)."""
    node, app = cluster("node-1")
    r = aioredis.from_url(django_settings.REDIS_URL)
    slot_key = f"{django_settings.REDIS_KEY_PREFIX}:slots:user:{user.pk}"
    old = WSClient(app)
    ready = await old.connect(token, client_id="phone-1")
    member = ratelimit.slot_member("phone-1", ready["conversation_id"])

    async def lost(*args, **kwargs):
        return None

    monkeypatch.setattr(type(get_channel_layer()), "send", lost)
    new = WSClient(app)
    await new.connect(token, conversation_id=ready["conversation_id"], last_seq=0, client_id="phone-1")
    await old.drop()  # the old socket goes away by itself; nobody told it it was replaced

    async def old_socket_gone():
        return len(node.connections) == 1

    await eventually(old_socket_gone, timeout=5, what="the old socket cleaned up")
    try:
        assert await r.zscore(slot_key, member) is not None, "the successor's slot was freed"
        await new.drop()

        async def freed():
            return await r.zscore(slot_key, member) is None

        await eventually(freed, timeout=5, what="the successor's own close frees the slot")
    finally:
        await r.aclose()
