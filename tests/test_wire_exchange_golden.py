"""The wire, byte for byte: one full exchange over several sockets, recorded as the server sent
it and compared with `tests/support/wire_exchange.golden`.

Why (issue 20): restructuring the code must not change one byte a client receives. The golden
file was recorded at 4fc06a7, before the restructuring; a change that alters the wire on
purpose records it again (`TETHER_RECORD_GOLDEN=1`) and says so in docs/protocol.md.

What varies between runs is normalised before the comparison: ids (UUIDs, numbered in order of
first appearance), tokens and expiry times. Frames the protocol lets arrive in either order
(`message.ack` and the `message.created` it answers) are kept apart: each socket's sequenced
frames in their own order, its other frames in theirs.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest
from channels.db import database_sync_to_async

from realtime.agents.base import AgentContext
from realtime.agents.demo import compose_answer
from sessions_app import services
from tests.conftest import access_for
from tests.support.ws import WSClient

# PostgreSQL encodes replayed frames itself (jsonb), SQLite through Python: the golden file is
# PostgreSQL's.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

GOLDEN = Path(__file__).parent / "support" / "wire_exchange.golden"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
JWT_RE = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")
EXPIRY_RE = re.compile(r'"access_expires_at":\d+')


class OneDeltaAgent:
    """The demo agent's answer in one delta: the number of `agent.delta` events of a run then
    does not depend on the coalescing window and the machine's speed."""

    async def stream(self, context: AgentContext):
        yield compose_answer(context)


class RecordingClient(WSClient):
    """Keeps the text of every frame exactly as the server sent it."""

    def __init__(self, app, name: str) -> None:
        super().__init__(app)
        self.name = name
        self.raw: list[str] = []
        self.comm_last_text = ""

    async def recv(self, timeout: float = 10) -> dict:
        frame = await super().recv(timeout)
        self.raw.append(self.comm_last_text)
        return frame


def _capture_text(client: RecordingClient) -> None:
    """Wraps the communicator so the raw text of each frame is seen before it is parsed."""
    receive = client.comm.receive_output

    async def receive_output(timeout=1):
        output = await receive(timeout)
        if output["type"] == "websocket.send":
            client.comm_last_text = output["text"]
        return output

    client.comm.receive_output = receive_output


def recording(app, name: str) -> RecordingClient:
    client = RecordingClient(app, name)
    _capture_text(client)
    return client


def transcript(clients: list[RecordingClient]) -> str:
    """Each socket's sequenced frames, then its other frames, then its close code; ids
    numbered in order of first appearance over the whole transcript."""
    lines: list[str] = []
    for client in clients:
        sequenced = [t for t in client.raw if '"seq":' in t and '"type":"message.ack"' not in t]
        others = [t for t in client.raw if t not in sequenced]
        lines += [f"{client.name} seq {t}" for t in sequenced]
        lines += [f"{client.name} ctl {t}" for t in others]
        lines.append(f"{client.name} close {client.close_code}")
    names: dict[str, str] = {}

    def number(match: re.Match) -> str:
        return names.setdefault(match.group(0), f"<id{len(names) + 1}>")

    text = "\n".join(lines)
    text = JWT_RE.sub("<token>", text)
    text = EXPIRY_RE.sub('"access_expires_at":<exp>', text)
    return UUID_RE.sub(number, text) + "\n"


async def test_a_full_exchange_is_byte_for_byte_the_recorded_one(settings, cluster, user, other_user):
    settings.REALTIME_AGENT = f"{__name__}.OneDeltaAgent"
    _, app = cluster("node-1")
    token = access_for(user)

    a = recording(app, "A")
    ready = await a.connect(token, client_id="tab-a")
    conversation_id = ready["conversation_id"]
    msg_id = str(uuid.uuid4())
    await a.message("my name is Ada", msg_id)
    await a.recv_until(lambda f: f["type"] == "agent.completed")
    if not any(f["type"] == "message.ack" for f in a.frames):
        await a.recv_until(lambda f: f["type"] == "message.ack")
    await a.send({"type": "ping", "id": 42})
    await a.recv_until(lambda f: f["type"] == "pong")
    unknown_run = str(uuid.uuid4())
    await a.send({"type": "cancel", "run_id": unknown_run})
    await a.recv_until(lambda f: f["type"] == "error")
    await a.send({"type": "message", "client_msg_id": str(uuid.uuid4())})
    await a.recv_until(lambda f: f["type"] == "error" and f["code"] == "bad_frame")
    await a.send("not json")
    await a.recv_until(lambda f: f.get("detail", "").startswith("frame is not"))
    await a.send({"type": "ack", "seq": 4})
    await a.send({"type": "auth.refresh", "access": access_for(user)})
    await a.recv_until(lambda f: f["type"] == "auth.refreshed")
    await a.message("my name is Ada", msg_id)  # a resend: the original seq, duplicate
    await a.recv_until(lambda f: f["type"] == "message.ack" and f["duplicate"])
    await a.message("what is my name")
    await a.recv_until(lambda f: f["type"] == "agent.completed" and f["seq"] == 8)

    b = recording(app, "B")
    await b.connect(token, conversation_id=conversation_id, last_seq=2, client_id="tab-b")
    await b.recv_until(lambda f: f.get("seq") == 8)

    c = recording(app, "C")  # the same client as A on a new socket: A is replaced
    await c.connect(token, conversation_id=conversation_id, last_seq=6, client_id="tab-a")
    await c.recv_until(lambda f: f.get("seq") == 8)
    await a.expect_close()

    d = recording(app, "D")
    await d.open()
    await d.send({"type": "connect", "token": "not-a-token", "conversation_id": None, "last_seq": None,
                  "client_id": "tab-d"})
    await d.expect_close()

    e = recording(app, "E")
    await e.open()
    await e.send({"type": "connect", "token": access_for(other_user), "conversation_id": conversation_id,
                  "last_seq": None, "client_id": "tab-e"})
    await e.expect_close()

    stored = await database_sync_to_async(services.conversation_last_seq)(conversation_id)
    assert stored == 8
    got = transcript([a, b, c, d, e])
    if os.environ.get("TETHER_RECORD_GOLDEN") == "1":
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text()
    for client in (b, c):
        await client.drop()
