"""While the node knows its database is out and a connect is already trying it, another connect
is answered at once with `going_away`, `retry_after_ms` and 4012, without a database call
(issue 25, item 3; realtime/connection/session.py, realtime/infra/outage.py).

Without the gate every connect of a reconnecting crowd waited for a database thread behind
calls that each wait up to REALTIME_DB_TIMEOUT for a partitioned database: the connects hung
past the connect timeout."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from realtime.infra import outage
from sessions_app import services
from tests.support.ws import WSClient

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_connect_is_refused_at_once_while_another_tries_the_database(node_app, token, monkeypatch):
    outage.DATABASE.failed(OperationalError("connection timeout expired"))
    calls = []
    open_session = services.open_session
    monkeypatch.setattr(services, "open_session", lambda *a, **kw: calls.append(1) or open_session(*a, **kw))
    with outage.DATABASE.admit() as probing:  # another connect of this process is trying it
        assert probing
        client = WSClient(node_app)
        await client.open()
        await client.send({"type": "connect", "token": token, "conversation_id": None, "last_seq": None,
                           "client_id": "c1"})
        frames, code = await client.expect_close(timeout=2)
    assert [(f["type"], f["code"], f["retry_after_ms"]) for f in frames] == [("error", "going_away", 1000)]
    assert code == 4012 and calls == []

    # Once nobody is trying it, the next connect does (and, the database answering, ends the outage).
    again = WSClient(node_app)
    ready = await again.connect(token)
    assert ready["type"] == "ready" and calls == [1]
    assert not outage.DATABASE.down
