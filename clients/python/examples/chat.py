"""Send one message to a Tether server and print the agent's streamed answer.

    python examples/chat.py USERNAME PASSWORD ["message text"] [--conversation ID|last]

or with TETHER_USERNAME / TETHER_PASSWORD (and optionally TETHER_MESSAGE) in the environment.
Without --conversation it starts a new conversation; it prints the conversation's id (on
stderr), and `--conversation ID` sends the next message to that conversation (`last`: the
user's most recently active one), so the demo agent remembers "my name is ...".
TETHER_HTTP_URL (default http://127.0.0.1:8000) and TETHER_WS_URL (default
ws://127.0.0.1:8000/ws/v1/) point it at another server. When the server cannot be reached or
refuses the login, it says so in one line and exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Resume:
    conversation_id: str
    last_seq: int


async def find_conversation(access: str, wanted: str) -> Resume:
    """The conversation to continue (`last`: the most recently active one) and where its log
    stands, so that the client resumes there instead of replaying the whole conversation."""
    url = f"{HTTP_URL}/api/conversations/?limit=1" if wanted == "last" else f"{HTTP_URL}/api/conversations/{wanted}/"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(url, headers={"Authorization": f"Bearer {access}"})
    except httpx.HTTPError as exc:
        raise Unreachable(f"could not reach {url}: {str(exc) or type(exc).__name__}") from None
    if response.status_code == 404:
        raise Unreachable(f"no conversation {wanted!r} for this user ({url} answered 404)")
    if response.status_code != 200:
        raise Unreachable(f"{url} answered HTTP {response.status_code}")
    body = response.json()
    if wanted == "last":
        if not body["results"]:
            raise Unreachable("this user has no conversation yet: leave out --conversation to start one")
        body = body["results"][0]
    return Resume(body["id"], body["last_seq"])


async def chat(username: str, password: str, text: str, conversation: str | None = None) -> int:
    tokens = await login(username, password)
    resume = await find_conversation(tokens.access, conversation) if conversation else None

    async with TetherClient(
        [WS_URL],
        token=tokens.access,
        refresh_token=tokens.refresh,
        conversation_id=resume.conversation_id if resume else None,
        last_seq=resume.last_seq if resume else None,
    ) as client:
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
                conversation_id = client.conversation_id
                print(f"[conversation {conversation_id}: continue it with --conversation {conversation_id}]",
                      file=sys.stderr)
                return 0
            elif isinstance(event, AgentFailed) and event.run_id == run_id:
                print(f"\n[agent failed: {event.error}]", file=sys.stderr)
                return 1
            elif isinstance(event, Disconnected) and event.final:
                print(f"[stopped: {event.reason}]", file=sys.stderr)
                return 1
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("username", nargs="?", default=os.environ.get("TETHER_USERNAME"))
    parser.add_argument("password", nargs="?", default=os.environ.get("TETHER_PASSWORD"))
    parser.add_argument("text", nargs="?", default=os.environ.get("TETHER_MESSAGE", "Hello! What can you do?"))
    parser.add_argument("--conversation", metavar="ID|last",
                        help="continue this conversation (its id, or 'last': the most recently active one)")
    args = parser.parse_intermixed_args()  # the message may follow --conversation
    if not args.username or not args.password:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        return asyncio.run(chat(args.username, args.password, args.text, args.conversation))
    except Unreachable as exc:
        print(f"chat.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
