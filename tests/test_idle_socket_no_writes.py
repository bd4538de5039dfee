"""An idle socket causes no periodic database write (issue 22, target 3).

The node's resync still reads every socket's row each REALTIME_RESYNC_INTERVAL (closed by
someone else? user deactivated? token revoked? events the fan-out dropped?), but it writes a
row only when its socket made progress: events delivered or acked since the row was last
written. The row's version (PostgreSQL's `xmin`, new with every UPDATE, even one that changes
nothing) shows whether anything was written.
"""

import pytest
from channels.db import database_sync_to_async
from django.db import connection

from realtime.node.resync import resync_once
from sessions_app.models import Connection
from tests.support.ws import WSClient

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def row_version(client_id: str) -> tuple[str, int, int]:
    """(xmin, delivered_seq, acked_seq) of the socket's connection row."""
    pk = Connection.objects.get(client_id=client_id, closed_at__isnull=True).pk
    with connection.cursor() as cur:
        cur.execute("SELECT xmin::text, delivered_seq, acked_seq FROM sessions_app_connection WHERE id = %s", [pk])
        return cur.fetchone()


async def test_an_idle_socket_is_read_but_not_written_by_the_resync(settings, cluster, token):
    settings.REALTIME_ACK_FLUSH_INTERVAL = 3600  # acks are stored by the resync only
    node, app = cluster("node-1")
    client = WSClient(app)
    await client.connect(token, client_id="tab-idle")
    done = await client.converse("hello")
    await client.send({"type": "ack", "seq": done[-1]["seq"]})
    await client.send({"type": "ping", "id": 1})
    await client.recv_until(lambda f: f["type"] == "pong")

    await resync_once(node)  # progress since the open: written
    xmin, delivered, acked = await database_sync_to_async(row_version)("tab-idle")
    assert (delivered, acked) == (done[-1]["seq"], done[-1]["seq"])

    # Idle: heartbeats only, three resync rounds. Nothing is written.
    for i in range(3):
        await client.send({"type": "ping", "id": 2 + i})
        await client.recv_until(lambda f: f["type"] == "pong")
        await resync_once(node)
    assert await database_sync_to_async(row_version)("tab-idle") == (xmin, delivered, acked)

    # Progress again (a new answer, acked): the next resync writes it.
    more = await client.converse("again")
    await client.send({"type": "ack", "seq": more[-1]["seq"]})
    await client.send({"type": "ping", "id": 9})
    await client.recv_until(lambda f: f["type"] == "pong")
    await resync_once(node)
    moved = await database_sync_to_async(row_version)("tab-idle")
    assert moved[0] != xmin and moved[1:] == (more[-1]["seq"], more[-1]["seq"])
    await client.drop(1000)


async def test_the_read_only_resync_still_ends_the_socket_of_a_deactivated_user(cluster, token, user):
    node, app = cluster("node-1")
    client = WSClient(app)
    await client.connect(token, client_id="tab-gone")
    await resync_once(node)
    xmin = (await database_sync_to_async(row_version)("tab-gone"))[0]
    await resync_once(node)
    assert (await database_sync_to_async(row_version)("tab-gone"))[0] == xmin

    user.is_active = False
    await database_sync_to_async(user.save)(update_fields=["is_active"])
    await resync_once(node)

    frames, code = await client.expect_close()
    assert (frames[-1]["type"], frames[-1]["code"], code) == ("error", "unauthenticated", 4401), frames
    await client.drop(4401)
