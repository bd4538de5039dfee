"""Send one message to a Tether server and print the agent's streamed answer.

    python examples/chat.py USERNAME PASSWORD ["message text"]

or with TETHER_USERNAME / TETHER_PASSWORD (and optionally TETHER_MESSAGE) in the environment.
TETHER_HTTP_URL (default http://127.0.0.1:8000) and TETHER_WS_URL (default
ws://127.0.0.1:8000/ws/v1/) point it at another server. When the server cannot be reached or
refuses the login, it says so in one line and exits with status 1.
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
    TokenPair,
    obtain_token,
)

HTTP_URL = os.environ.get("TETHER_HTTP_URL", "http://127.0.0.1:8000")
WS_URL = os.environ.get("TETHER_WS_URL", "ws://127.0.0.1:8000/ws/v1/")


class Unreachable(Exception):
    """What went wrong, in one line for the user (no traceback)."""


def _url_of(exc: httpx.HTTPError, default: str) -> str:
    try:
        return str(exc.request.url)
    except RuntimeError:  # an error raised before a request existed
        return default


async def login(username: str, password: str) -> TokenPair:
    """`POST /api/auth/token/`; raises Unreachable with a one-line reason."""
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            return await obtain_token(http, HTTP_URL, username, password)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 401:
            raise Unreachable(f"login refused for {username!r} at {_url_of(exc, HTTP_URL)}") from None
        raise Unreachable(f"{_url_of(exc, HTTP_URL)} answered HTTP {exc.response.status_code}") from None
    except httpx.HTTPError as exc:  # refused, DNS, TLS, timeout
        reason = str(exc) or type(exc).__name__
        raise Unreachable(f"could not reach {_url_of(exc, HTTP_URL)}: {reason}") from None


async def chat(username: str, password: str, text: str) -> int:
    tokens = await login(username, password)

    async with TetherClient([WS_URL], token=tokens.access, refresh_token=tokens.refresh) as client:
        msg_id = await client.send(text)
        my_message_id = run_id = None
        connected_once = False
        async for event in client.events():
            if isinstance(event, Connected):
                connected_once = True
                print(f"[connected to {event.node}, conversation {event.conversation_id}]", file=sys.stderr)
            elif isinstance(event, Reconnecting) and not connected_once:
                # Never connected: the server is not there. Once connected, outages are
                # retried (that is the point of the client); before, there is nothing to resume.
                raise Unreachable(f"could not reach {WS_URL}: {event.reason}")
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
    try:
        return asyncio.run(chat(username, password, text))
    except Unreachable as exc:
        print(f"chat.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
