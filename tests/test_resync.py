"""The node's batched resync: rows marked alive with delivered/acked seq, slots extended but
never resurrected, dropped fan-out caught up."""

import time

import pytest
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.utils import timezone

from realtime.infra import ratelimit
from realtime.node.resync import resync_once
from sessions_app import services
from sessions_app.models import Connection
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


async def test_resync_moves_rows_forward_and_catches_dropped_events(settings, cluster, token, user):
    settings.REALTIME_ACK_FLUSH_INTERVAL = 3600
    node, app = cluster("node-1")
    client = WSClient(app)
    ready = await client.connect(token, client_id="tab-1")
    done = await client.converse("hello")
    await client.send({"type": "ack", "seq": 1})
    await client.send({"type": "ack", "seq": done[-1]["seq"]})
    await client.send({"type": "ping", "id": 1})
    await client.recv_until(lambda f: f["type"] == "pong")
    # An event committed without any fan-out (as if the pub/sub message were lost).
    event = await database_sync_to_async(services.append_event)(ready["conversation_id"], "note", {"x": 1})
    before = time.time()

    await resync_once(node)

    missed = await client.recv(timeout=5)
    assert (missed["type"], missed["seq"]) == ("note", event.seq)
    row = await database_sync_to_async(Connection.objects.get)(client_id="tab-1")
    assert row.acked_seq == done[-1]["seq"] and row.delivered_seq == done[-1]["seq"]
    assert row.last_seen_at.timestamp() >= before - 1
    r = aioredis.from_url(django_settings.REDIS_URL)
    slot_key = f"{django_settings.REDIS_KEY_PREFIX}:slots:user:{user.pk}"
    member = ratelimit.slot_member("tab-1", ready["conversation_id"])
    assert await r.zscore(slot_key, member) > before * 1000
    # A released slot is not brought back by a late renewal.
    await ratelimit.release_slot(f"user:{user.pk}", member)
    await ratelimit.renew_slots([(f"user:{user.pk}", member)], 60)
    assert await r.zscore(slot_key, member) is None
    await r.aclose()
    await client.drop()


async def test_row_closed_elsewhere_ends_the_socket_with_the_code_its_client_can_act_on(cluster, token):
    """A socket whose row another node closed learns it at the resync. Replaced by its own
    client: 4409, do not come back. Reaped (this node was taken for dead): 4012, resume."""
    node, app = cluster("node-1")
    reaped, replaced = WSClient(app), WSClient(app)
    ready = await reaped.connect(token, client_id="tab-reaped")
    await replaced.connect(token, client_id="tab-replaced")

    def close_rows():
        rows = Connection.objects.filter(closed_at__isnull=True)
        rows.filter(client_id="tab-reaped").update(closed_at=timezone.now(), close_code=1006, close_reason="node_lost")
        rows.filter(client_id="tab-replaced").update(closed_at=timezone.now(), close_code=4409, close_reason="replaced")

    await database_sync_to_async(close_rows)()
    await resync_once(node)

    frames, code = await reaped.expect_close()
    assert (frames[-1]["type"], frames[-1]["code"], code) == ("error", "going_away", 4012), frames
    frames, code = await replaced.expect_close()
    assert (frames[-1]["type"], frames[-1]["code"], code) == ("error", "replaced", 4409), frames
    await reaped.drop(4012)
    await replaced.drop(4409)

    back = WSClient(app)
    again = await back.connect(token, client_id="tab-reaped", conversation_id=ready["conversation_id"], last_seq=0)
    assert again["resumed"] is True
    await back.drop(1000)
