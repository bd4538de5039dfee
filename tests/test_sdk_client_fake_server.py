"""TetherClient against a tiny in-process fake protocol server (websockets.serve, no Django)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest
from tether_client import (
    AgentCompleted,
    AgentDelta,
    AgentToolCall,
    AgentToolResult,
    ApprovalRequested,
    ApprovalResolved,
    Backoff,
    Connected,
    Disconnected,
    MessageCreated,
    Reconnecting,
    ReloadRequired,
    SequencedEvent,
    ServerError,
    TetherClient,
    TetherError,
)
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.support.ports import free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.pure

CONV = "5b0c0d6e-8a2f-4c43-9a43-5d1f7d0b2a11"
RUN = "9d4c1b7e-0f3a-4f55-8a1e-2b6c7d8e9f00"
MSG_ID = "a1a1a1a1-0000-4000-8000-000000000001"
FAR_FUTURE = int(time.time()) + 3600


def ready(node: str, **fields) -> dict:
    frame = {
        "type": "ready",
        "conversation_id": CONV,
        "resumed": False,
        "last_seq": 0,
        "replay_count": 0,
        "heartbeat_interval_ms": 25000,
        "access_expires_at": FAR_FUTURE,
        "node": node,
    }
    frame.update(fields)
    return frame


def delta(seq: int, index: int, text: str) -> dict:
    return {"type": "agent.delta", "seq": seq, "run_id": RUN, "index": index, "text": text}


class Conn:
    """One accepted socket of the fake server; records every frame it reads."""

    def __init__(self, ws: ServerConnection, number: int):
        self.ws = ws
        self.number = number
        self.frames: list[dict] = []

    async def recv(self, kind: str) -> dict:
        while True:
            frame = json.loads(await self.ws.recv())
            self.frames.append(frame)
            if frame.get("type") == kind:
                return frame

    async def send(self, *frames: dict) -> None:
        for frame in frames:
            await self.ws.send(json.dumps(frame))

    async def drain(self) -> None:
        """Reads until the client goes away."""
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                self.frames.append(json.loads(raw))


Script = Callable[[Conn], Awaitable[None]]


class FakeServer:
    def __init__(self, scripts: list[Script]):
        self.scripts = scripts
        self.conns: list[Conn] = []
        self.url = ""

    async def handler(self, ws: ServerConnection) -> None:
        conn = Conn(ws, len(self.conns))
        self.conns.append(conn)
        script = self.scripts[min(conn.number, len(self.scripts) - 1)]
        with contextlib.suppress(ConnectionClosed):
            await script(conn)

    def connects(self) -> list[dict]:
        return [f for conn in self.conns for f in conn.frames if f["type"] == "connect"]


@pytest.fixture
async def fake_server():
    async with contextlib.AsyncExitStack() as stack:

        async def start(*scripts: Script) -> FakeServer:
            server = FakeServer(list(scripts))
            ws_server = await stack.enter_async_context(serve(server.handler, "127.0.0.1", 0))
            port = ws_server.sockets[0].getsockname()[1]
            server.url = f"ws://127.0.0.1:{port}/ws/v1/"
            return server

        yield start


@pytest.fixture
async def clients():
    made: list[TetherClient] = []

    def make(*args, **kwargs) -> TetherClient:
        kwargs.setdefault("backoff", Backoff(base=0.01, cap=0.05))
        client = TetherClient(*args, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def collect(client: TetherClient, until: Callable[[object], bool], timeout: float = 5.0) -> list:
    events: list = []
    async with asyncio.timeout(timeout):
        async for event in client.events():
            events.append(event)
            if until(event):
                break
    return events


# --- the main scenario: 4012 mid-stream ---------------------------------------------------


async def test_reconnects_at_once_after_4012_resumes_resends_and_delivers_each_event_once(fake_server, clients):
    async def first_socket(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send(ready("fake-1", resumed=False, last_seq=0))
        message = await conn.recv("message")
        stored = {"id": "m1", "role": "user", "text": message["text"], "client_msg_id": message["client_msg_id"]}
        # Stored, but the ack is "lost": the client must resend it after the reconnect.
        await conn.send(
            {"type": "message.created", "seq": 1, "message": stored},
            {"type": "agent.started", "seq": 2, "run_id": RUN, "in_reply_to": "m1"},
            delta(3, 0, "Nice "),
            delta(4, 1, "to meet you, "),
            {"type": "reconnect", "reason": "server is restarting", "retry_after_ms": 0},
        )
        await conn.ws.close(4012, "going away")

    async def second_socket(conn: Conn) -> None:
        connect = await conn.recv("connect")
        await conn.send(
            ready("fake-2", resumed=True, last_seq=connect["last_seq"] + 3, replay_count=3),
            delta(4, 1, "to meet you, "),  # a duplicate: must not reach the application
            delta(5, 2, "Ada. I will "),
            delta(6, 3, "remember your name."),
        )
        resent = await conn.recv("message")
        await conn.send(
            {"type": "message.ack", "client_msg_id": resent["client_msg_id"], "seq": 1, "duplicate": True},
            delta(5, 2, "Ada. I will "),  # another duplicate
            {"type": "agent.completed", "seq": 7, "run_id": RUN,
             "message": {"id": "b2", "role": "assistant", "text": "Nice to meet you, Ada. I will remember your name."}},
        )
        await conn.drain()

    server = await fake_server(first_socket, second_socket)
    client = clients([server.url], token="access-1")
    msg_id = await client.send("my name is Ada", client_msg_id=MSG_ID)
    events = await collect(client, lambda e: isinstance(e, AgentCompleted))

    sequenced = [e for e in events if isinstance(e, SequencedEvent)]
    assert [e.seq for e in sequenced] == [1, 2, 3, 4, 5, 6, 7]  # each exactly once, in order
    assert isinstance(sequenced[0], MessageCreated) and sequenced[0].message.client_msg_id == msg_id
    deltas = [e for e in sequenced if isinstance(e, AgentDelta)]
    assert [d.index for d in deltas] == [0, 1, 2, 3]
    assert "".join(d.text for d in deltas) == sequenced[-1].message.text

    # reconnected immediately, to the same single endpoint, resuming after seq 4
    reconnecting = [e for e in events if isinstance(e, Reconnecting)]
    assert len(reconnecting) == 1 and reconnecting[0].delay == 0.0 and reconnecting[0].attempt == 1
    disconnected = [e for e in events if isinstance(e, Disconnected)]
    assert [(d.code, d.final) for d in disconnected] == [(4012, False)]
    assert [e.resumed for e in events if isinstance(e, Connected)] == [False, True]
    first, second = server.connects()
    assert (first["conversation_id"], first["last_seq"], first["token"]) == (None, None, "access-1")
    assert (second["conversation_id"], second["last_seq"]) == (CONV, 4)
    assert second["client_id"] == first["client_id"] == client.client_id
    assert len(client.resume_latencies) == 1 and client.resume_latencies[0] < 1.0

    # the unacked message was resent with the same id, and acked as a duplicate
    sent = [[f["client_msg_id"] for f in conn.frames if f["type"] == "message"] for conn in server.conns]
    assert sent == [[MSG_ID], [MSG_ID]]
    ack = await client.wait_acked(msg_id, timeout=5)
    assert (ack.seq, ack.duplicate) == (1, True)
    assert client.pending_messages == []
    assert client.last_seq == 7

    await client.close()
    await eventually(lambda: any(f == {"type": "ack", "seq": 7} for f in server.conns[1].frames))


# --- failover, liveness, auth, stops -----------------------------------------------------


async def serve_forever(conn: Conn) -> None:
    await conn.recv("connect")
    await conn.send(ready("live"))
    await conn.drain()


async def test_fails_over_to_the_next_endpoint(fake_server, clients):
    server = await fake_server(serve_forever)
    dead = f"ws://127.0.0.1:{free_port()}/ws/v1/"  # nothing listens there
    client = clients([dead, server.url], token="t")
    events = await collect(client, lambda e: isinstance(e, Connected))
    connected = events[-1]
    assert connected.endpoint == server.url
    assert any(isinstance(e, Reconnecting) and "connect to" in e.reason for e in events)
    assert client.resume_latencies == []  # a first connection is not a resume


async def test_discovery_supplies_the_endpoints(fake_server, clients):
    server = await fake_server(serve_forever)
    seen_auth = []

    def nodes(request: httpx.Request) -> httpx.Response:
        seen_auth.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"nodes": [{"node": "n1", "ws_url": server.url}]})

    http = httpx.AsyncClient(transport=httpx.MockTransport(nodes))
    client = clients(discovery_url="http://tether.test/api/realtime/nodes/", token="t", http_client=http)
    await client.wait_connected(timeout=5)
    assert client.endpoints == [server.url]
    assert seen_auth == ["Bearer t"]
    await http.aclose()


async def test_a_silent_server_is_declared_dead_and_the_client_resumes(fake_server, clients):
    async def silent(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send(ready("mute"), {"type": "message.created", "seq": 1,
                                        "message": {"id": "m1", "role": "user", "text": "hi"}})
        await conn.ws.wait_closed()  # never answers a ping

    server = await fake_server(silent, serve_forever)
    client = clients([server.url], token="t", heartbeat_interval=0.05, heartbeat_timeout=0.3)
    events = await collect(client, lambda e: isinstance(e, Connected) and e.node == "live")
    lost = [e for e in events if isinstance(e, Disconnected)]
    assert len(lost) == 1 and "no frame from the server" in lost[0].reason
    assert server.connects()[1]["last_seq"] == 1
    await eventually(lambda: any(f["type"] == "ping" for f in server.conns[1].frames))


async def test_4401_renews_the_token_via_the_provider_and_auth_expiring_refreshes_in_place(fake_server, clients):
    tokens = iter(["t1", "t2", "t3"])

    async def provider() -> str:
        return next(tokens)

    async def expired(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send({"type": "error", "code": "token_expired", "detail": "expired"})
        await conn.ws.close(4401)

    async def good(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send(ready("n"), {"type": "auth.expiring", "access_expires_at": FAR_FUTURE})
        refresh = await conn.recv("auth.refresh")
        assert refresh == {"type": "auth.refresh", "access": "t3"}
        await conn.send({"type": "auth.refreshed", "access_expires_at": FAR_FUTURE + 300})
        await conn.drain()

    server = await fake_server(expired, good)
    client = clients([server.url], token_provider=provider)
    await client.wait_connected(timeout=5)
    assert [c["token"] for c in server.connects()] == ["t1", "t2"]
    await eventually(lambda: client.access_token == "t3")


async def test_refresh_token_is_used_over_the_socket(fake_server, clients):
    async def rotate(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send(ready("n"), {"type": "auth.expiring", "access_expires_at": FAR_FUTURE})
        refresh = await conn.recv("auth.refresh")
        assert refresh == {"type": "auth.refresh", "refresh": "r1"}
        await conn.send({"type": "auth.refreshed", "access": "a2", "refresh": "r2", "access_expires_at": FAR_FUTURE})
        await conn.drain()

    server = await fake_server(rotate)
    client = clients([server.url], token="a1", refresh_token="r1")
    await client.wait_connected(timeout=5)
    await eventually(lambda: (client.access_token, client.refresh_token) == ("a2", "r2"))


async def test_forbidden_stops_and_surfaces_the_error(fake_server, clients):
    async def forbidden(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send({"type": "error", "code": "forbidden", "detail": "not your conversation"})
        await conn.ws.close(4403)

    server = await fake_server(forbidden)
    client = clients([server.url], token="t", conversation_id=CONV)
    events = await collect(client, lambda e: False)  # the stream ends by itself
    assert isinstance(events[-1], Disconnected)
    assert (events[-1].code, events[-1].final, events[-1].error_code) == (4403, True, "forbidden")
    assert isinstance(client.error, TetherError) and client.closed
    assert len(server.conns) == 1
    with pytest.raises(TetherError):
        await client.send("hello")


async def test_rate_limited_waits_retry_after_ms(fake_server, clients):
    async def limited(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send({"type": "error", "code": "rate_limited", "detail": "slow down", "retry_after_ms": 120})
        await conn.ws.close(4429)

    server = await fake_server(limited, serve_forever)
    client = clients([server.url], token="t")
    events = await collect(client, lambda e: isinstance(e, Connected))
    assert [e.delay for e in events if isinstance(e, Reconnecting)] == [0.12]


async def test_resumed_false_asks_the_application_to_reload(fake_server, clients):
    async def pruned(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send(
            ready("n", resumed=False, last_seq=50),
            {"type": "agent.started", "seq": 50, "run_id": RUN, "in_reply_to": "m"},  # already in the reload
            {"type": "agent.started", "seq": 51, "run_id": RUN, "in_reply_to": "m"},
        )
        await conn.drain()

    server = await fake_server(pruned)
    client = clients([server.url], token="t", conversation_id=CONV, last_seq=10)
    events = await collect(client, lambda e: isinstance(e, SequencedEvent))
    reload = [e for e in events if isinstance(e, ReloadRequired)]
    assert reload == [ReloadRequired(conversation_id=CONV, after_seq=10, server_last_seq=50)]
    assert events[-1].seq == 51
    assert server.connects()[0]["last_seq"] == 10


async def test_a_gap_triggers_a_resume_from_the_last_applied_seq(fake_server, clients):
    async def holey(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send(ready("n"), delta(1, 0, "a"), delta(3, 2, "c"))
        await conn.drain()

    async def whole(conn: Conn) -> None:
        connect = await conn.recv("connect")
        assert connect["last_seq"] == 1
        await conn.send(ready("m", resumed=True, last_seq=3, replay_count=2), delta(2, 1, "b"), delta(3, 2, "c"))
        await conn.drain()

    server = await fake_server(holey, whole)
    client = clients([server.url], token="t")
    events = await collect(client, lambda e: isinstance(e, SequencedEvent) and e.seq == 3)
    assert [e.seq for e in events if isinstance(e, SequencedEvent)] == [1, 2, 3]
    assert [e.delay for e in events if isinstance(e, Reconnecting)] == [0.0]


async def test_unavailable_and_server_error_resend_the_same_message_later(fake_server, clients):
    """A message the server could not handle now is resent with the same client_msg_id after
    retry_after_ms; one that keeps hitting a server bug is reported after a few tries."""
    async def flaky(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send(ready("n"))
        first = await conn.recv("message")
        await conn.send({"type": "error", "code": "unavailable", "detail": "retry", "ref": first["client_msg_id"],
                         "retry_after_ms": 30})
        again = await conn.recv("message")
        assert again == first
        await conn.send({"type": "message.ack", "client_msg_id": first["client_msg_id"], "seq": 1,
                         "duplicate": False})
        buggy = await conn.recv("message")
        for _ in range(4):
            await conn.send({"type": "error", "code": "server_error", "detail": "bug",
                             "ref": buggy["client_msg_id"], "retry_after_ms": 10})
            if _ < 3:
                assert await conn.recv("message") == buggy
        await conn.drain()

    server = await fake_server(flaky)
    client = clients([server.url], token="t")
    await client.wait_connected(timeout=5)
    stored = await client.send("hello")
    ack = await client.wait_acked(stored, timeout=5)
    assert (ack.seq, ack.duplicate) == (1, False)
    doomed = await client.send("triggers a bug")
    with pytest.raises(TetherError):
        await client.wait_acked(doomed, timeout=5)
    assert [m.client_msg_id for m in client.pending_messages] == []
    messages = [f for f in server.conns[0].frames if f["type"] == "message"]
    assert [m["client_msg_id"] for m in messages] == [stored, stored, doomed, doomed, doomed, doomed]


async def test_unavailable_refresh_is_tried_again(fake_server, clients):
    async def busy(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send(ready("n"), {"type": "auth.expiring", "access_expires_at": FAR_FUTURE})
        first = await conn.recv("auth.refresh")
        await conn.send({"type": "error", "code": "unavailable", "detail": "retry", "retry_after_ms": 20})
        assert await conn.recv("auth.refresh") == first
        await conn.send({"type": "auth.refreshed", "access": "a2", "refresh": "r2", "access_expires_at": FAR_FUTURE})
        await conn.drain()

    server = await fake_server(busy)
    client = clients([server.url], token="a1", refresh_token="r1")
    await client.wait_connected(timeout=5)
    await eventually(lambda: (client.access_token, client.refresh_token) == ("a2", "r2"))


# --- tools and approvals ------------------------------------------------------------------

CALL = "0f1e2d3c-4b5a-5968-8776-a5b4c3d2e1f0"
OTHER_CALL = "1a2b3c4d-5e6f-5a7b-8c9d-0e1f2a3b4c5d"


def tool_frames() -> list[dict]:
    """A run's tool steps as the server sends them (docs/protocol.md, "Tools and approvals")."""
    return [
        {"type": "agent.tool_call", "seq": 1, "run_id": RUN, "call_id": OTHER_CALL, "tool": "demo.effect",
         "arguments": {"n": 1}, "effect": "idempotent"},
        {"type": "agent.tool_result", "seq": 2, "run_id": RUN, "call_id": OTHER_CALL, "status": "ok",
         "result": {"n": 1}},
        {"type": "approval.requested", "seq": 3, "run_id": RUN, "call_id": CALL, "tool": "demo.transfer",
         "arguments": {"n": 5}, "reason": "policy", "expires_at": FAR_FUTURE},
    ]


async def test_tool_steps_and_approvals_are_typed_events_and_answers_go_out_as_approval_respond(
        fake_server, clients):
    """The application gets the four new sequenced events, typed, once each and in seq order;
    `approve` / `deny` send `approval.respond`; `already_decided` and `not_found` come back as
    `ServerError`s (with the decision that stands) and the socket stays open."""
    async def script(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send(ready("fake-1"), *tool_frames())
        approve = await conn.recv("approval.respond")
        await conn.send(
            {"type": "approval.resolved", "seq": 4, "run_id": RUN, "call_id": approve["call_id"],
             "decision": "approved", "by": "tab-1"},
            {"type": "agent.tool_call", "seq": 5, "run_id": RUN, "call_id": CALL, "tool": "demo.transfer",
             "arguments": {"n": 5}, "effect": "once"},
            {"type": "agent.tool_result", "seq": 6, "run_id": RUN, "call_id": CALL, "status": "unknown",
             "error": "outcome unknown: node died"},
        )
        late = await conn.recv("approval.respond")
        await conn.send({"type": "error", "code": "already_decided", "detail": "decided before",
                         "ref": late["call_id"], "decision": "approved"})
        stray = await conn.recv("approval.respond")
        await conn.send({"type": "error", "code": "not_found", "detail": "no such approval", "ref": stray["call_id"]},
                        {"type": "agent.tool_result", "seq": 7, "run_id": RUN, "call_id": OTHER_CALL,
                         "status": "ok", "truncated": True})
        await conn.drain()

    server = await fake_server(script)
    client = clients([server.url], token="t", client_id="tab-1")
    assert await client.approve(CALL) is False  # not connected yet: nothing sent
    events: list = []
    async with asyncio.timeout(5):
        async for event in client.events():
            events.append(event)
            if isinstance(event, ApprovalRequested):
                assert await client.approve(event.call_id) is True
            elif isinstance(event, AgentToolResult) and event.seq == 6:
                assert await client.deny(CALL) is True  # too late: approved already
            elif isinstance(event, ServerError) and event.code == "already_decided":
                assert await client.respond_approval("not-a-call", "approve") is True
            elif isinstance(event, AgentToolResult) and event.seq == 7:
                break

    sequenced = [e for e in events if isinstance(e, SequencedEvent)]
    assert [e.seq for e in sequenced] == [1, 2, 3, 4, 5, 6, 7]
    raw = [e.raw for e in sequenced]
    assert sequenced == [
        AgentToolCall(seq=1, raw=raw[0], run_id=RUN, call_id=OTHER_CALL, tool="demo.effect", arguments={"n": 1},
                      effect="idempotent"),
        AgentToolResult(seq=2, raw=raw[1], run_id=RUN, call_id=OTHER_CALL, status="ok", result={"n": 1}),
        ApprovalRequested(seq=3, raw=raw[2], run_id=RUN, call_id=CALL, tool="demo.transfer", arguments={"n": 5},
                          reason="policy", expires_at=FAR_FUTURE),
        ApprovalResolved(seq=4, raw=raw[3], run_id=RUN, call_id=CALL, decision="approved", by="tab-1"),
        AgentToolCall(seq=5, raw=raw[4], run_id=RUN, call_id=CALL, tool="demo.transfer", arguments={"n": 5},
                      effect="once"),
        AgentToolResult(seq=6, raw=raw[5], run_id=RUN, call_id=CALL, status="unknown",
                        error="outcome unknown: node died"),
        AgentToolResult(seq=7, raw=raw[6], run_id=RUN, call_id=OTHER_CALL, status="ok", truncated=True),
    ]
    errors = [e for e in events if isinstance(e, ServerError)]
    assert errors == [
        ServerError("already_decided", "decided before", CALL, None, "approved"),
        ServerError("not_found", "no such approval", "not-a-call", None, None),
    ]
    responds = [f for f in server.conns[0].frames if f["type"] == "approval.respond"]
    assert responds == [
        {"type": "approval.respond", "call_id": CALL, "decision": "approve"},
        {"type": "approval.respond", "call_id": CALL, "decision": "deny"},
        {"type": "approval.respond", "call_id": "not-a-call", "decision": "approve"},
    ]
    # Neither error closed anything: one socket, no disconnect, the client still connected.
    assert len(server.conns) == 1 and client.connected and not client.closed
    assert not [e for e in events if isinstance(e, Disconnected)]
    with pytest.raises(ValueError):
        await client.respond_approval(CALL, "approved")  # the frame's word is "approve"
    assert [f["type"] for f in server.conns[0].frames].count("approval.respond") == 3


async def test_fetch_events_types_tool_steps_and_approvals(fake_server, clients):
    """The REST history (`fetch_events`) gives the same typed events as the socket."""
    def events_api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"results": tool_frames(), "next": None})

    http = httpx.AsyncClient(transport=httpx.MockTransport(events_api))
    client = clients([f"ws://127.0.0.1:{free_port()}/ws/v1/"], token="t", conversation_id=CONV,
                     http_client=http, http_base_url="http://tether.test")
    events = await client.fetch_events(0)
    assert [type(e) for e in events] == [AgentToolCall, AgentToolResult, ApprovalRequested]
    assert (events[2].call_id, events[2].reason, events[2].arguments) == (CALL, "policy", {"n": 5})
    await http.aclose()
