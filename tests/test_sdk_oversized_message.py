"""TetherClient against a fake server that refuses frames over a size limit as Tether does
(4413 after a `frame_too_large` error, or 1009 from the transport): the refused message is
dropped and reported, never resent, and the rest of the outbox still goes out."""

from __future__ import annotations

import json

import pytest
from tether_client import Disconnected, MessageAcked, MessageRefused, MessageRejected

from tests import test_sdk_client_fake_server as fake
from tests.test_sdk_client_fake_server import Conn, collect, ready

pytestmark = pytest.mark.pure

# The fake server and client factory of the main fake-server suite, as fixtures of this module.
fake_server = fake.fake_server
clients = fake.clients

LIMIT = 2000  # the fake server's REALTIME_MAX_FRAME_BYTES


def refusing_server(close_code: int, seen: list[dict]):
    """Each socket: `ready`, then every `message` within LIMIT is stored and acked; the first
    frame over it closes the socket with ``close_code`` (4413 with its error frame first)."""
    stored: dict[str, int] = {}

    async def script(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send(ready(f"fake-{conn.number}", resumed=conn.number > 0, last_seq=len(stored)))
        async for raw in conn.ws:
            frame = json.loads(raw)
            seen.append({"socket": conn.number, "bytes": len(raw.encode()), **frame})
            if len(raw.encode()) > LIMIT:
                if close_code == 4413:
                    await conn.send({"type": "error", "code": "frame_too_large",
                                     "detail": f"frame exceeds {LIMIT} bytes"})
                await conn.ws.close(close_code)
                return
            if frame["type"] == "message":
                duplicate = frame["client_msg_id"] in stored
                seq = stored.setdefault(frame["client_msg_id"], len(stored) + 1)
                await conn.send({"type": "message.ack", "client_msg_id": frame["client_msg_id"], "seq": seq,
                                 "duplicate": duplicate})

    return script


@pytest.mark.parametrize("close_code", [4413, 1009])
async def test_a_refused_message_is_dropped_reported_and_the_rest_is_sent(fake_server, clients, close_code):
    seen: list[dict] = []
    server = await fake_server(refusing_server(close_code, seen))
    client = clients([server.url], token="access-1")
    await client.wait_connected(5)
    # Queued while the first is in flight: all three go out on the first socket.
    first = await client.send("before")
    poisoned = await client.send("x" * (5 * LIMIT))
    after = await client.send("after")

    events = await collect(
        client, lambda e: isinstance(e, MessageAcked) and e.client_msg_id == after, timeout=10)

    refused = [e for e in events if isinstance(e, MessageRefused)]
    assert refused == [MessageRefused(poisoned, "x" * (5 * LIMIT), "frame_too_large", close_code)]
    with pytest.raises(MessageRejected) as rejected:
        await client.wait_acked(poisoned, 1)
    assert (rejected.value.code, rejected.value.error_code) == (close_code, "frame_too_large")
    assert (await client.wait_acked(first, 1)).seq == 1
    assert (await client.wait_acked(after, 1)).seq == 2
    # The poisoned message went out once, on the first socket, and never again.
    assert [f["socket"] for f in seen if f.get("client_msg_id") == poisoned] == [0]
    assert client.pending_messages == []
    assert not client.closed
    lost = [e for e in events if isinstance(e, Disconnected)]
    assert [(e.code, e.final) for e in lost] == [(close_code, False)]


async def test_several_refused_messages_are_dropped_one_close_each(fake_server, clients):
    seen: list[dict] = []
    server = await fake_server(refusing_server(4413, seen))
    client = clients([server.url], token="access-1")
    huge = [await client.send(f"{n}" * (3 * LIMIT)) for n in range(3)]  # queued before ready
    fine = await client.send("fine")
    events = await collect(client, lambda e: isinstance(e, MessageAcked) and e.client_msg_id == fine, timeout=10)
    assert sorted(e.client_msg_id for e in events if isinstance(e, MessageRefused)) == sorted(huge)
    for msg_id in huge:
        assert len([f for f in seen if f.get("client_msg_id") == msg_id]) == 1, "a refused message was resent"
    assert not client.closed


async def test_frame_too_large_with_no_message_to_blame_stops(fake_server, clients):
    """The server closes 4413 though nothing large was sent (a frame the client does not know
    about): nothing to drop, so a resume could only loop. The client stops."""

    async def script(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send(ready("fake"))
        await conn.recv("message")
        await conn.send({"type": "error", "code": "frame_too_large", "detail": "frame exceeds 1 bytes"})
        await conn.ws.close(4413)

    server = await fake_server(script)
    client = clients([server.url], token="a-token-longer-than-the-message-frame" * 20)
    msg_id = await client.send("hi")
    events = await collect(client, lambda e: isinstance(e, Disconnected) and e.final, timeout=10)
    assert events[-1].code == 4413
    assert "no pending message was that large" in events[-1].reason
    assert client.closed and client.error is not None
    assert [m.client_msg_id for m in client.pending_messages] == [msg_id]  # kept: it was not refused


async def test_a_too_long_message_is_reported_and_not_resent_after_a_reconnect(fake_server, clients):
    """`too_long` keeps the socket open; the message still leaves the outbox for good."""
    seen: list[dict] = []

    async def first(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send(ready("fake-0"))
        message = await conn.recv("message")
        seen.append(message)
        await conn.send({"type": "error", "code": "too_long", "detail": "'text' is longer than 10 characters",
                         "ref": message["client_msg_id"]})
        await conn.ws.close(4012)  # then the node restarts: the client resumes

    async def second(conn: Conn) -> None:
        await conn.recv("connect")
        await conn.send(ready("fake-1", resumed=True))
        async for raw in conn.ws:
            frame = json.loads(raw)
            if frame["type"] == "message":
                seen.append(frame)
                await conn.send({"type": "message.ack", "client_msg_id": frame["client_msg_id"], "seq": 1,
                                 "duplicate": False})

    server = await fake_server(first, second)
    client = clients([server.url], token="access-1")
    long_id = await client.send("far too long for this server")
    events = await collect(client, lambda e: isinstance(e, MessageRefused), timeout=10)
    assert events[-1] == MessageRefused(long_id, "far too long for this server", "too_long", None)
    short_id = await client.send("short")
    await client.wait_acked(short_id, 5)
    assert [f["client_msg_id"] for f in seen] == [long_id, short_id]
