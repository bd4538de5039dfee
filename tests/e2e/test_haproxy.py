"""The reference deployment's balancer for real: Debian's haproxy on loopback runs the shipped
deploy/haproxy.cfg in front of two daphne nodes, and clients know only the balancer's URL. Every
client speaks TLS to it (wss://, https://) with a certificate made for the run
(tests/support/tls.py); plain HTTP is only redirected.

- A rolling restart (SIGTERM, drain, start again; one node, then the other) under talking SDK
  clients loses nothing and duplicates nothing: the health check on /readyz takes a draining
  node out of rotation and needs no stickiness.
- Per-IP limits (sockets and REST) see the client's address through the proxy
  (X-Forwarded-For paired with REALTIME_TRUSTED_PROXIES), and a forged header changes nothing.
- An idle socket outlives the balancer's tunnel timeout thanks to the heartbeats, and a silent
  one is ended by its node with a reason (4408), not cut by the balancer.
- TLS ends at the balancer, which tells the nodes (X-Forwarded-Proto, so they send HSTS); no
  spelling of /metrics gets through it (issue 24)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import ssl
import time

import httpx
import pytest
import websockets
from channels.db import database_sync_to_async

from sessions_app.models import Connection
from tests.support.haproxy import HAProxy
from tests.support.sdk_chat import (
    FAST_NODE_ENV,
    ChatSession,
    check_conversation,
    expected_answers,
    user_tokens,
    wait_exit,
    wait_ready,
)
from tests.support.talkers import Talkers
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BEHIND_PROXY = {**FAST_NODE_ENV, "REALTIME_TRUSTED_PROXIES": "127.0.0.1"}


@pytest.fixture
def balancer(request, monkeypatch):
    started: list[HAProxy] = []

    async def start(nodes, **env) -> HAProxy:
        """Starts haproxy and returns once its health checks put both nodes in rotation. The
        SDK's clients trust its certificate the way a deployment trusts a private CA: through
        SSL_CERT_FILE (the SDK has no TLS options of its own)."""
        lb = HAProxy([n.port for n in nodes], **env)
        started.append(lb)
        monkeypatch.setenv("SSL_CERT_FILE", str(lb.cert))
        lb.start()
        await _both_serving(lb, nodes)
        return lb

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for lb in started:
        if failed:
            print(f"--- haproxy log ---\n{lb.tail()}")
        lb.stop()


async def _both_serving(lb: HAProxy, nodes) -> None:
    """Waits until the balancer has sent a socket to each node (both checked UP)."""
    token = (await database_sync_to_async(user_tokens)(1, "probe"))[0]
    seen: set[str] = set()
    sources = itertools.cycle(f"127.0.1.{i}" for i in range(1, 255))

    async def probe():
        # Each probe from its own loopback address, so that the probes never use up a test's
        # per-IP connect limit; a probe refused by the per-user limit (4429) just tries again.
        try:
            async with websockets.connect(lb.ws_url, open_timeout=5, local_addr=(next(sources), 0),
                                          ssl=lb.ssl_context()) as ws:
                await ws.send(json.dumps({"type": "connect", "token": token, "conversation_id": None,
                                          "last_seq": None, "client_id": "probe"}))
                frame = json.loads(await ws.recv())
                if frame["type"] == "ready":
                    seen.add(frame["node"])
        except websockets.InvalidStatus as exc:  # 503: no server checked UP yet
            assert exc.response.status_code == 503, exc
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 4429, exc
        return seen >= {n.node_id for n in nodes}

    await eventually(probe, timeout=20, interval=0.2, what="the balancer serving both nodes")


async def test_rolling_restart_through_the_balancer_loses_nothing(daphne_cluster, balancer):
    a = daphne_cluster("lb-a", **BEHIND_PROXY)
    b = daphne_cluster("lb-b", **BEHIND_PROXY)
    await wait_ready(a)
    await wait_ready(b)
    lb = await balancer([a, b], TETHER_CHECK_INTERVAL="200ms")
    tokens = await database_sync_to_async(user_tokens)(8, "lb")
    sessions = [ChatSession.open([lb.ws_url], token, name=f"c{i}") for i, token in enumerate(tokens)]
    async with Talkers(sessions, ("count 40", "count 120", "count 40"), min_messages=3) as talkers:
        await talkers.all_answered_once()
        for node in (a, b):
            node.proc.terminate()  # SIGTERM: drain
            assert await wait_exit(node, timeout=15) == 0, node.tail()
            await asyncio.to_thread(node.start)  # same id and port
            await wait_ready(node)
            talkers.check()
        await talkers.finish(90)

    for s in sessions:
        result = await database_sync_to_async(check_conversation)(s, expected_answers(s))
        assert result.messages >= 3
        assert s.client.error is None, f"{s.name}: {s.client.error!r}"
        # Every client sat on a node that was restarted at least once, and each move was the
        # drain's polite 4012 (through the balancer), never a cut connection.
        losses = [e.code for _, e in s.losses()]
        assert losses and set(losses) == {4012}, f"{s.name}: {losses}"
        assert all(e.resumed for _, e in s.connected_times()[1:]), s.name
    nodes_used = await database_sync_to_async(lambda: set(Connection.objects.values_list("node", flat=True)))()
    assert nodes_used == {"lb-a", "lb-b"}


async def _connect_from(lb: HAProxy, source: str, token: str, **headers: str) -> tuple[dict, int | None]:
    """Opens a socket through the balancer from a loopback source address; returns the
    server's first frame and the close code if the server closed."""
    async with websockets.connect(lb.ws_url, open_timeout=5, additional_headers=headers,
                                  local_addr=(source, 0), ssl=lb.ssl_context()) as ws:
        # A node refusing the address answers right after the handshake, and may have closed
        # before this send: the refusal frame is still there to read.
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(json.dumps({"type": "connect", "token": token, "conversation_id": None,
                                      "last_seq": None, "client_id": f"c-{time.monotonic_ns()}"}))
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == "ready":
            return frame, None
        await asyncio.wait_for(ws.wait_closed(), 10)
        return frame, ws.close_code


async def test_per_ip_limits_see_the_client_through_the_balancer(daphne_cluster, balancer, user):
    env = {**BEHIND_PROXY, "REALTIME_RATE_CONNECT_IP": "3/600", "API_THROTTLE_TOKEN_IP": "2/min"}
    a = daphne_cluster("ip-a", **env)
    b = daphne_cluster("ip-b", **env)
    await wait_ready(a)
    await wait_ready(b)
    lb = await balancer([a, b], TETHER_CHECK_INTERVAL="200ms")
    token = (await database_sync_to_async(user_tokens)(1, "ip"))[0]
    # Both nodes share the limit through Redis, whichever one the balancer picks.
    for _ in range(3):
        frame, _ = await _connect_from(lb, "127.0.0.2", token)
        assert frame["type"] == "ready", frame
    frame, code = await _connect_from(lb, "127.0.0.2", token)
    assert (frame["type"], frame["code"], code) == ("error", "rate_limited", 4429), frame
    # Another client address is not limited: the nodes did not count the balancer's address.
    frame, _ = await _connect_from(lb, "127.0.0.3", token)
    assert frame["type"] == "ready", frame
    # Claiming to be someone else changes nothing: the balancer drops the client's header.
    frame, code = await _connect_from(lb, "127.0.0.2", token, **{"X-Forwarded-For": "203.0.113.9"})
    assert code == 4429, frame
    frame, _ = await _connect_from(lb, "127.0.0.3", token, **{"X-Forwarded-For": "127.0.0.2"})
    assert frame["type"] == "ready", frame
    addrs = await database_sync_to_async(
        lambda: set(Connection.objects.exclude(client_id="probe").values_list("remote_addr", flat=True)))()
    assert addrs == {"127.0.0.2", "127.0.0.3"}, addrs

    # The REST throttle on password guessing counts the client behind the balancer too.
    async def login(source: str) -> int:
        transport = httpx.AsyncHTTPTransport(local_address=source, verify=lb.ssl_context())
        async with httpx.AsyncClient(transport=transport, timeout=10) as http:
            response = await http.post(f"{lb.http_url}/api/auth/token/",
                                       json={"username": user.username, "password": "wrong"})
            return response.status_code

    assert [await login("127.0.0.4") for _ in range(3)] == [401, 401, 429]
    assert await login("127.0.0.5") == 401
    # And /metrics is not reachable through the balancer, however it is spelled: the nodes
    # decode "%6d" to "m" and route what they decoded (before issue 24, "/%6detrics" got the
    # metrics: the balancer's rule read the path as sent).
    async with httpx.AsyncClient(timeout=5, verify=lb.ssl_context()) as http:
        for path in ("/metrics", "/%6detrics", "/%6Detrics", "/%6D%65trics", "/metrics%3Fx", "/%2fmetrics"):
            response = await http.get(f"{lb.http_url}{path}")
            assert response.status_code == 404 and "tether_" not in response.text, (path, response.status_code)


async def test_an_idle_socket_outlives_the_balancer_timeouts_thanks_to_heartbeats(daphne_cluster, balancer):
    # Scaled down, in the shipped proportions: heartbeat every 1 s, the node ends a silent
    # socket after 2.5 s, the balancer's tunnel timeout (3 s) is above that.
    env = {**BEHIND_PROXY, "REALTIME_HEARTBEAT_INTERVAL_MS": "1000", "REALTIME_HEARTBEAT_TIMEOUT": "2.5"}
    a = daphne_cluster("idle-a", **env)
    b = daphne_cluster("idle-b", **env)
    await wait_ready(a)
    await wait_ready(b)
    lb = await balancer([a, b], TETHER_TUNNEL_TIMEOUT="3s", TETHER_CHECK_INTERVAL="200ms")
    token = (await database_sync_to_async(user_tokens)(1, "idle"))[0]
    session = ChatSession.open([lb.ws_url], token, name="idle")
    try:
        await session.wait_for(lambda: session.connected_times(), 15, "connected")
        idle = 10.0  # more than three tunnel timeouts without a single application message
        await asyncio.sleep(idle)  # the scenario itself is the wait: nothing to poll for
        assert session.losses() == [], session.losses()
        assert len(session.connected_times()) == 1
        answer = await session.converse("still here?")
        assert answer.message.text == "You said: still here?"
        assert len(session.connected_times()) == 1 and session.losses() == []
    finally:
        await session.close()

    # Without heartbeats the node, not the balancer, ends the socket, and says why.
    async with websockets.connect(lb.ws_url, open_timeout=5, ssl=lb.ssl_context()) as ws:
        # Timed from before the `connect` frame, the node's last frame from this client: on a
        # loaded machine the `ready` can take long enough to arrive that timing from it would
        # put the close too early.
        started = time.monotonic()
        await ws.send(json.dumps({"type": "connect", "token": token, "conversation_id": None,
                                  "last_seq": None, "client_id": "silent"}))
        assert json.loads(await ws.recv())["type"] == "ready"
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        await asyncio.wait_for(ws.wait_closed(), 5)
    silent_for = time.monotonic() - started
    # The node's own timeout (2.5 s) ended it, with its frame: the balancer's (3 s) would
    # have cut the tunnel without one. The upper bound only catches a timeout far too late.
    assert (frame["code"], ws.close_code) == ("heartbeat_timeout", 4408), frame
    assert 2.5 <= silent_for < 2.5 + 2.0, silent_for


async def test_tls_ends_at_the_balancer_which_tells_the_nodes(daphne_cluster, balancer):
    env = {**BEHIND_PROXY, "TLS_PROXY_HEADER": "1", "SECURE_HSTS_SECONDS": "60"}
    a = daphne_cluster("tls-a", **env)
    b = daphne_cluster("tls-b", **env)
    await wait_ready(a)
    await wait_ready(b)
    lb = await balancer([a, b], TETHER_CHECK_INTERVAL="200ms")
    async with httpx.AsyncClient(timeout=5, verify=lb.ssl_context()) as http:
        # The nodes know the client spoke HTTPS (X-Forwarded-Proto from the balancer, whatever
        # the client sent), so they send HSTS.
        for claimed in ("http", "https"):
            response = await http.get(f"{lb.http_url}/healthz", headers={"X-Forwarded-Proto": claimed})
            assert response.status_code == 200
            assert response.headers["strict-transport-security"] == "max-age=60"
        # Plain HTTP is only redirected.
        plain = await http.get(f"{lb.plain_http_url}/api/conversations/")
        assert plain.status_code == 301 and plain.headers["location"].startswith("https://"), plain.headers
    # A certificate nobody vouched for is refused; ws:// to the TLS port is no WebSocket.
    with pytest.raises(ssl.SSLCertVerificationError):
        await websockets.connect(lb.ws_url, open_timeout=5, ssl=ssl.create_default_context(cafile=certifi_bundle()))
    with pytest.raises((websockets.InvalidMessage, websockets.InvalidStatus, ConnectionError, EOFError)):
        await websockets.connect(lb.ws_url.replace("wss://", "ws://"), open_timeout=5)
    token = (await database_sync_to_async(user_tokens)(1, "tls"))[0]
    frame, code = await _connect_from(lb, "127.0.0.9", token)
    assert frame["type"] == "ready" and code is None, frame


def certifi_bundle() -> str:
    import certifi

    return certifi.where()
