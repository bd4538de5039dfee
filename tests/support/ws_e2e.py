"""A protocol client over the `websockets` library, for end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import uuid

import websockets


class E2EClient:
    def __init__(self, token: str, client_id: str | None = None):
        self.token = token
        self.client_id = client_id or str(uuid.uuid4())
        self.ws = None
        self.conversation_id: str | None = None
        self.applied: dict[int, dict] = {}  # seq -> frame, each applied once

    @property
    def last_seq(self) -> int | None:
        return max(self.applied) if self.applied else None

    async def connect(self, url: str) -> dict:
        self.ws = await websockets.connect(url, open_timeout=10, max_size=None)
        await self.ws.send(
            json.dumps(
                {
                    "type": "connect",
                    "token": self.token,
                    "conversation_id": self.conversation_id,
                    "last_seq": self.last_seq,
                    "client_id": self.client_id,
                }
            )
        )
        ready = await self.recv()
        assert ready["type"] == "ready", ready
        self.conversation_id = ready["conversation_id"]
        return ready

    async def recv(self, timeout: float = 20) -> dict:
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        if "seq" in frame and frame["type"] != "message.ack":
            assert frame["seq"] not in self.applied, f"seq {frame['seq']} delivered twice"
            if self.applied:
                assert frame["seq"] == max(self.applied) + 1, f"gap before {frame['seq']}"
            self.applied[frame["seq"]] = frame
        return frame

    async def until(self, predicate, timeout: float = 30) -> dict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - loop.time()))
            if predicate(frame):
                return frame

    async def message(self, text: str) -> str:
        msg_id = str(uuid.uuid4())
        await self.ws.send(json.dumps({"type": "message", "client_msg_id": msg_id, "text": text}))
        return msg_id

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    def run_text(self, run_id: str) -> str:
        deltas = [f for f in self.applied.values() if f["type"] == "agent.delta" and f["run_id"] == run_id]
        assert [d["index"] for d in deltas] == list(range(len(deltas)))
        return "".join(d["text"] for d in deltas)
