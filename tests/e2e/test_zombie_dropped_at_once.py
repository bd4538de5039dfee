"""A peer silent for a whole heartbeat timeout loses its TCP connection at once, without the
close handshake's linger (issue 25, item 2).

The lingering close (realtime/server/daphne_server.py, `DAPHNE_CLOSE_HANDSHAKE_TIMEOUT`, 5 s)
keeps reading after the server's close frame until the client answers with its own, for a
client still sending a refused frame (tests/e2e/test_oversized_frames_daphne.py). A client
that has sent nothing for `REALTIME_HEARTBEAT_TIMEOUT` will not answer a close frame either:
we measured its connection (behind a blackholing proxy) dropped 7.7 s after it went silent
with a 3 s timeout, the timeout plus the whole linger. Here the same client behind
tests.support.netproxy.FaultProxy: the proxy sees the server's side of the connection end
within the timeout plus a margin, far below the timeout plus the linger."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import Connection
from tests.conftest import access_for
from tests.support.netproxy import FaultProxy
from tests.support.waiting import eventually
from tests.support.ws_e2e import E2EClient

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

HEARTBEAT_TIMEOUT = 2.0
LINGER = 5.0  # DAPHNE_CLOSE_HANDSHAKE_TIMEOUT, its default, set here so the test says it
# From going silent to the server's close: the watchdog's wake-up and a loaded machine.
MARGIN = 1.0

NODE_ENV = {
    "REALTIME_HEARTBEAT_INTERVAL_MS": 1000,
    "REALTIME_HEARTBEAT_TIMEOUT": HEARTBEAT_TIMEOUT,
    "DAPHNE_CLOSE_HANDSHAKE_TIMEOUT": LINGER,
    # Daphne's protocol pings must not be what finds the zombie.
    "DAPHNE_PING_INTERVAL": 60,
    "DAPHNE_PING_TIMEOUT": 120,
}


async def test_a_silent_peer_is_dropped_when_its_heartbeat_times_out_without_the_linger(daphne_cluster, user):
    node = daphne_cluster("zombie-drop", **NODE_ENV)
    token = await database_sync_to_async(access_for)(user)
    proxy = await FaultProxy(upstream=("127.0.0.1", node.port)).start()
    client = E2EClient(token)
    try:
        await client.connect(proxy.url())
        await client.ws.send(json.dumps({"type": "ping", "id": 1}))
        assert await client.until(lambda f: f["type"] == "pong") == {"type": "pong", "id": 1}
        [connection] = proxy.connections
        from_server = connection.upstream_to_client

        proxy.blackhole()  # from now on the client says nothing and hears nothing
        silent_at = asyncio.get_running_loop().time()  # the proxy's clock

        async def server_side_ended():
            return from_server.source_ended_at

        ended_at = await eventually(
            server_side_ended, timeout=HEARTBEAT_TIMEOUT + LINGER + 3, interval=0.02,
            what="the server's side of the connection ended",
        )
        dropped_after = ended_at - silent_at
        print(f"\nsilent -> TCP connection dropped by the server after {dropped_after:.2f}s "
              f"(heartbeat timeout {HEARTBEAT_TIMEOUT:g}s, linger {LINGER:g}s)")
        assert HEARTBEAT_TIMEOUT - 0.3 <= dropped_after <= HEARTBEAT_TIMEOUT + MARGIN

        def closed_row():
            row = Connection.objects.filter(client_id=client.client_id).get()
            return row if row.closed_at is not None else None

        row = await eventually(database_sync_to_async(closed_row), timeout=3, what="the row closed")
        assert (row.close_code, row.close_reason) == (4408, "heartbeat_timeout")
    finally:
        await proxy.stop()
        with contextlib.suppress(Exception):
            await client.close()
