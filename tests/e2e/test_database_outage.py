"""PostgreSQL unreachable for 30 s, mid-answer on two nodes (issue 25, item 3), both ways:

- `stop`: the server is stopped (`pg_ctl stop -m fast`: every session is terminated, new
  connections are refused) and started again;
- `blackhole`: the nodes reach it through tests.support.netproxy.FaultProxy, which swallows
  everything (no FIN, no RST: queries and answers vanish, connects never complete).

The database is a private server of this module (tests/support/postgres_server.py): the
machine's PostgreSQL is shared and must never be stopped. SDK clients keep talking throughout.
What must hold, either way:

- the nodes stay up and /readyz answers 503 (`"database"`) while the database is out;
- a new connect gets `error` `going_away` with `retry_after_ms` and close 4012 well within the
  connect timeout, instead of hanging;
- open sockets stay open, or are told to reconnect with 4012;
- the runs pause and go on afterwards from their last committed delta: every client's log is
  exactly the database's, each answer whole, one run per message;
- each node logs the outage in a few lines: unreachable, reachable again, no traceback.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import websockets
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model

from sessions_app.models import AgentRun, Connection
from tests.conftest import access_for
from tests.support.netproxy import FaultProxy
from tests.support.postgres_server import PostgresServer
from tests.support.sdk_chat import (
    FAST_NODE_ENV,
    check_conversation,
    expected_answers,
    readyz,
    streaming_on_both,
    wait_ready,
)
from tests.support.talkers import Talkers, sessions_across
from tests.support.waiting import eventually

ALIAS = "outage"  # the private database, as this process reads it
DATABASE = "tether"
pytestmark = [pytest.mark.e2e, pytest.mark.postgres,
              pytest.mark.django_db(transaction=True, databases=["default", ALIAS])]

OUTAGE = 30.0
CLIENTS = 4
DB_TIMEOUT = 5.0  # REALTIME_DB_TIMEOUT, its default
CONNECT_TIMEOUT = 10.0  # REALTIME_CONNECT_TIMEOUT, its default
STUCK_DEADLINE = 60.0


@pytest.fixture(scope="module")
def private_postgres(django_db_setup):
    """After the test databases are set up: the alias is not one of them (the nodes write to
    the database itself, and so must this process read it)."""
    server = PostgresServer().init().start()
    try:
        server.create_database(DATABASE)
        server.register_alias(ALIAS, DATABASE)
        yield server
    finally:
        server.forget_alias(ALIAS)
        server.destroy()


def _tokens(count: int) -> list[str]:
    users = get_user_model().objects.db_manager(ALIAS)
    tag = uuid.uuid4().hex[:6]
    return [access_for(users.create(username=f"db-{tag}-{i}")) for i in range(count)]


def _logged_at(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _log(node) -> str:
    node.log.flush()
    return Path(node.log.name).read_text(errors="replace")


async def _refused_connect(url: str, token: str) -> tuple[dict, int, float]:
    """A new socket's connect while the database is out: (its error frame, its close code,
    seconds from `connect` to the error)."""
    async with websockets.connect(url, open_timeout=10) as ws:
        started = time.monotonic()
        await ws.send(json.dumps({"type": "connect", "token": token, "conversation_id": None,
                                  "last_seq": None, "client_id": f"probe-{uuid.uuid4().hex[:8]}"}))
        frame = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT + 5))
        took = time.monotonic() - started
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    return frame, closed.value.rcvd.code, took


@pytest.mark.parametrize("how", ["stop", "blackhole"])
async def test_a_database_outage_mid_answer_pauses_the_runs_and_loses_nothing(how, daphne_cluster, private_postgres):
    server = private_postgres
    if not server.running():
        await asyncio.to_thread(server.start)
    proxy = None
    port = server.port
    if how == "blackhole":
        proxy = await FaultProxy(upstream=("127.0.0.1", server.port)).start()
        port = proxy.port
    env = {**FAST_NODE_ENV, "DATABASE_URL": server.url(DATABASE, port=port)}
    a = daphne_cluster(f"db-{how}-a", **env)
    b = daphne_cluster(f"db-{how}-b", **env)
    try:
        await wait_ready(a)
        await wait_ready(b)
        tokens = await database_sync_to_async(_tokens)(CLIENTS + 1)
        probe_token = tokens.pop()
        sessions = sessions_across(a, b, tokens, "d")
        async with Talkers(sessions, ("count 80",), min_messages=2, timeout=STUCK_DEADLINE) as talkers:
            await streaming_on_both(a, b, using=ALIAS)

            cut, cut_wall = time.monotonic(), time.time()
            if how == "stop":
                await asyncio.to_thread(server.stop)
            else:
                proxy.blackhole()

            async def both_unready():
                # Within REALTIME_DB_TIMEOUT: a probe that gets no answer is cut like any call.
                statuses = await asyncio.gather(*(readyz(n.port, timeout=DB_TIMEOUT + 2) for n in (a, b)))
                return statuses == [503, 503]

            await eventually(both_unready, timeout=DB_TIMEOUT + 10, what="both nodes report not ready")
            unready = time.monotonic() - cut
            refusals = [await _refused_connect(n.ws_url, probe_token) for n in (a, b)]
            for frame, code, took in refusals:
                refused = (frame["type"], frame["code"], frame["retry_after_ms"], code)
                assert refused == ("error", "going_away", 1000, 4012)
                assert took < CONNECT_TIMEOUT, took
            assert a.proc.poll() is None and b.proc.poll() is None

            await asyncio.sleep(max(0.0, cut + OUTAGE - time.monotonic()))  # the outage itself, not a wait
            if how == "stop":
                await asyncio.to_thread(server.start)
            else:
                proxy.clear_faults()
            back = time.monotonic()
            await wait_ready(a)
            await wait_ready(b)
            ready = time.monotonic() - back

            counts = [len(s.sent) for s in sessions]
            await asyncio.gather(*(
                s.wait_for(lambda s=s, n=n: s.completed_count() >= n, STUCK_DEADLINE, "the answers under way")
                for s, n in zip(sessions, counts, strict=True)
            ))
            resumed = time.monotonic() - back
            await talkers.finish(STUCK_DEADLINE)
            logs = {n.node_id: _log(n) for n in (a, b)}
            await asyncio.gather(*(s.close() for s in sessions))

            # Every row closed, those of sockets that closed during the outage too (their node's
            # resync closes them once the database is back). Checked before the proxy goes away.
            def open_rows():
                rows = Connection.objects.using(ALIAS).filter(node__in=[a.node_id, b.node_id], closed_at__isnull=True)
                return list(rows.values_list("client_id", flat=True))

            async def none_open():
                return not await database_sync_to_async(open_rows)()

            await eventually(none_open, timeout=10, what="every connection row closed")
    finally:
        if proxy is not None:
            await proxy.stop()

    losses = [e for s in sessions for _, e in s.losses()]
    print(
        f"\n{how}: database out {back - cut:.1f}s; both nodes unready after {unready:.1f}s; connects refused "
        f"(going_away 4012) in {', '.join(f'{t:.2f}s' for _, _, t in refusals)}; nodes ready {ready:.2f}s and "
        f"every answer under way done {resumed:.2f}s after it was back; {len(losses)} sockets told to reconnect"
    )
    for s in sessions:
        await database_sync_to_async(check_conversation)(s, expected_answers(s), using=ALIAS)
        assert s.client.error is None, f"{s.name}: {s.client.error!r}"
        # Open sockets stayed open, or were told to reconnect (4012); none crashed or was dropped.
        assert all(e.code == 4012 for _, e in s.losses()), f"{s.name}: {s.losses()}"

    # Some answer was cut by the outage and taken up again (a second claim), from its committed
    # text: check_conversation found every answer whole, every delta once.
    def claims() -> list[int]:
        conversations = [s.client.conversation_id for s in sessions]
        return list(AgentRun.objects.using(ALIAS).filter(conversation_id__in=conversations)
                    .values_list("claims", flat=True))

    assert max(await database_sync_to_async(claims)()) >= 2

    # The outage in a few lines per node, without a traceback.
    for node, text in logs.items():
        lines = [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line]
        since_cut = [line for line in lines if _logged_at(line) >= cut_wall - 0.01]
        print(f"{node}: {len(since_cut)} warning lines: {[w.split(' ', 3)[-1][:110] for w in since_cut]}")
        edges = [line for line in since_cut if "realtime.infra.outage database" in line]
        assert [("unreachable" in e, "reachable again" in e) for e in edges] == [(True, False), (False, True)], lines
        assert len(since_cut) <= 6, since_cut
        assert "Traceback" not in text, text[-3000:]
