"""A protocol-speaking test client over Channels' WebsocketCommunicator (in-process)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

from channels.testing import WebsocketCommunicator


class Closed(Exception):
    def __init__(self, code: int | None):
        super().__init__(f"socket closed with {code}")
        self.code = code


OPEN_CLIENTS: list[WSClient] = []


async def close_all_clients() -> None:
    """Test teardown: a test that failed half-way leaves app instances running, which would
    otherwise keep the event loop (and the run) from finishing."""
    while OPEN_CLIENTS:
        client = OPEN_CLIENTS.pop()
        if not client.comm.future.done():
            try:
                await client.comm.disconnect(code=1006, timeout=2)
            except BaseException:  # noqa: BLE001 - best effort during teardown
                client.comm.future.cancel()


class WSClient:
    """One socket. `recv` waits with a deadline for a frame that must come; `assert_silent`
    checks that nothing is pending without killing the app (a receive timeout would)."""

    def __init__(self, app: Any, *, origin: str | None = None, client_addr: tuple[str, int] | None = None):
        headers = [(b"origin", origin.encode())] if origin else []
        self.comm = WebsocketCommunicator(app, "/ws/v1/", headers=headers)
        OPEN_CLIENTS.append(self)
        if client_addr is not None:
            self.comm.scope["client"] = client_addr
        self.frames: list[dict] = []
        self.close_code: int | None = None
        self.ready: dict | None = None

    async def open(self) -> None:
        connected, _ = await self.comm.connect(timeout=10)
        assert connected, "handshake refused"

    async def send(self, frame: dict | str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.comm.send_to(bytes_data=frame)
        elif isinstance(frame, str):
            await self.comm.send_to(text_data=frame)
        else:
            await self.comm.send_json_to(frame)

    async def recv(self, timeout: float = 10) -> dict:
        if self.close_code is not None:
            raise Closed(self.close_code)
        output = await self.comm.receive_output(timeout)
        if output["type"] == "websocket.close":
            self.close_code = output.get("code", 1000)
            raise Closed(self.close_code)
        frame = json.loads(output["text"])
        self.frames.append(frame)
        return frame

    async def recv_until(self, predicate: Callable[[dict], bool], timeout: float = 20) -> list[dict]:
        """Frames up to and including the first one matching `predicate`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        got: list[dict] = []
        while True:
            remaining = deadline - loop.time()
            assert remaining > 0, f"condition not met within {timeout}s; got {got[-5:]}"
            frame = await self.recv(remaining)
            got.append(frame)
            if predicate(frame):
                return got

    async def expect_close(self, timeout: float = 10) -> tuple[list[dict], int]:
        """Frames received until the server closed, and the close code."""
        got: list[dict] = []
        try:
            while True:
                got.append(await self.recv(timeout))
        except Closed as closed:
            return got, closed.code

    async def assert_silent(self, settle: float = 0.3) -> None:
        assert await self.comm.receive_nothing(timeout=settle), "unexpected frame pending"

    async def connect(
        self,
        token: str,
        conversation_id: str | None = None,
        last_seq: int | None = None,
        client_id: str | None = None,
    ) -> dict:
        await self.open()
        await self.send(
            {
                "type": "connect",
                "token": token,
                "conversation_id": conversation_id,
                "last_seq": last_seq,
                "client_id": client_id or str(uuid.uuid4()),
            }
        )
        self.ready = await self.recv()
        assert self.ready["type"] == "ready", self.ready
        return self.ready

    async def message(self, text: str, client_msg_id: str | None = None) -> str:
        client_msg_id = client_msg_id or str(uuid.uuid4())
        await self.send({"type": "message", "client_msg_id": client_msg_id, "text": text})
        return client_msg_id

    async def converse(self, text: str, timeout: float = 20) -> list[dict]:
        """Sends a message; returns the frames up to the agent's completed answer."""
        await self.message(text)
        return await self.recv_until(lambda f: f["type"] == "agent.completed", timeout)

    async def drop(self, code: int = 1006) -> None:
        """The network went away: the app sees websocket.disconnect."""
        # After a server close the app still waits for the transport's websocket.disconnect.
        await self.comm.disconnect(code=code if self.close_code is None else self.close_code, timeout=5)


def sequenced(frames: list[dict]) -> list[dict]:
    return [f for f in frames if "seq" in f and f["type"] not in ("message.ack", "ack")]


def assert_gapless(frames: list[dict], after: int = 0) -> None:
    seqs = [f["seq"] for f in sequenced(frames)]
    assert seqs == list(range(after + 1, after + 1 + len(seqs))), seqs


def run_text(frames: list[dict], run_id: str) -> str:
    deltas = [f for f in frames if f["type"] == "agent.delta" and f["run_id"] == run_id]
    assert [d["index"] for d in deltas] == list(range(len(deltas))), [d["index"] for d in deltas]
    return "".join(d["text"] for d in deltas)
