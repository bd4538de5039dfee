"""Send one message to a Tether server and print the agent's streamed answer.

    python examples/chat.py USERNAME PASSWORD ["message text"]

or with TETHER_USERNAME / TETHER_PASSWORD (and optionally TETHER_MESSAGE) in the environment.
TETHER_HTTP_URL (default http://127.0.0.1:8000) and TETHER_WS_URL (default
ws://127.0.0.1:8000/ws/v1/) point it at another server.
"""

from __future__ import annotations

import asyncio
import os
import sys

import httpx
from tether_client import (
    AgentCompleted,
    AgentDelta,
    AgentFailed,
    AgentStarted,
    Connected,
    Disconnected,
    MessageCreated,
    Reconnecting,
    TetherClient,
    obtain_token,
)

HTTP_URL = os.environ.get("TETHER_HTTP_URL", "http://127.0.0.1:8000")
WS_URL = os.environ.get("TETHER_WS_URL", "ws://127.0.0.1:8000/ws/v1/")


async def chat(username: str, password: str, text: str) -> int:
    async with httpx.AsyncClient(timeout=10) as http:
        tokens = await obtain_token(http, HTTP_URL, username, password)  # POST /api/auth/token/

    async with TetherClient([WS_URL], token=tokens.access, refresh_token=tokens.refresh) as client:
        msg_id = await client.send(text)
        my_message_id = run_id = None
        async for event in client.events():
            if isinstance(event, Connected):
                print(f"[connected to {event.node}, conversation {event.conversation_id}]", file=sys.stderr)
            elif isinstance(event, Reconnecting):
                print(f"[reconnecting in {event.delay:.2f}s: {event.reason}]", file=sys.stderr)
            elif isinstance(event, MessageCreated) and event.message.client_msg_id == msg_id:
                my_message_id = event.message.id
                print(f"> {event.message.text}")
            elif isinstance(event, AgentStarted) and event.in_reply_to == my_message_id:
                run_id = event.run_id
            elif isinstance(event, AgentDelta) and event.run_id == run_id:
                print(event.text, end="", flush=True)  # each delta once, in order, across reconnects
            elif isinstance(event, AgentCompleted) and event.run_id == run_id:
                print()
                return 0
            elif isinstance(event, AgentFailed) and event.run_id == run_id:
                print(f"\n[agent failed: {event.error}]", file=sys.stderr)
                return 1
            elif isinstance(event, Disconnected) and event.final:
                print(f"[stopped: {event.reason}]", file=sys.stderr)
                return 1
    return 1


def main() -> int:
    args = sys.argv[1:]
    username = args[0] if len(args) > 0 else os.environ.get("TETHER_USERNAME")
    password = args[1] if len(args) > 1 else os.environ.get("TETHER_PASSWORD")
    text = args[2] if len(args) > 2 else os.environ.get("TETHER_MESSAGE", "Hello! What can you do?")
    if not username or not password:
        print(__doc__, file=sys.stderr)
        return 2
    return asyncio.run(chat(username, password, text))


if __name__ == "__main__":
    sys.exit(main())
