"""A socket that closes while the database is out still gets its connection row closed, by the
node's next resync once the database answers (issue 25, item 3; realtime/node/resync.py).

Before, the failed close was only logged ("the node reaper closes rows left open"), but the
reaper closes the rows of dead nodes only: on a live node the row stayed open for good, and
operators counted a socket that no longer existed."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError

from realtime.node.resync import resync_once
from sessions_app import services
from sessions_app.models import Connection
from tests.support.waiting import eventually
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_row_whose_close_failed_is_closed_by_the_next_resync(cluster, token, monkeypatch):
    node, app = cluster("node-1")
    client = WSClient(app)
    await client.connect(token)
    await client.send({"type": "ping", "id": 1})
    await client.recv_until(lambda f: f["type"] == "pong")
    close_connection = services.close_connection
    failures = []

    def unreachable(*args, **kwargs):
        failures.append(args)
        raise OperationalError("the database is restarting")

    monkeypatch.setattr(services, "close_connection", unreachable)
    await client.drop(code=1001)

    async def close_failed():
        return failures and node.unclosed_rows

    await eventually(close_failed, timeout=5, what="the row's close failed")
    open_rows = await database_sync_to_async(lambda: list(Connection.objects.filter(closed_at__isnull=True)))()
    assert len(open_rows) == 1

    with pytest.raises(OperationalError):  # the database still fails: this round fails (logged once)
        await resync_once(node)
    assert len(node.unclosed_rows) == 1  # and the row waits for the next

    monkeypatch.setattr(services, "close_connection", close_connection)
    await resync_once(node)
    assert node.unclosed_rows == []
    row = await database_sync_to_async(Connection.objects.get)(pk=open_rows[0].pk)
    assert row.closed_at is not None
    assert (row.close_code, row.close_reason) == (1001, "client_closed")
