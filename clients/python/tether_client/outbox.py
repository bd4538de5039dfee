"""Messages sent but not yet acknowledged by `message.ack`, in send order.

Every message gets a ``client_msg_id`` (uuid4) once, when it is queued. After every
(re)connect the SDK resends all pending messages in order with the SAME ids: the server is
idempotent on (conversation, client_msg_id), answers a resend of a message it already has with
its original seq and ``duplicate: true``, and never starts a second agent run for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PendingMessage:
    client_msg_id: str
    text: str

    def frame(self) -> dict[str, Any]:
        return {"type": "message", "client_msg_id": self.client_msg_id, "text": self.text}


class Outbox:
    def __init__(self) -> None:
        self._items: dict[str, PendingMessage] = {}  # insertion order = send order

    def add(self, text: str, client_msg_id: str | None = None) -> PendingMessage:
        msg_id = str(uuid.UUID(client_msg_id)) if client_msg_id is not None else str(uuid.uuid4())
        if msg_id in self._items:
            raise ValueError(f"client_msg_id {msg_id} is already pending")
        item = PendingMessage(msg_id, text)
        self._items[msg_id] = item
        return item

    def ack(self, client_msg_id: str) -> PendingMessage | None:
        """A `message.ack` (``duplicate`` or not) arrived: the message is stored server-side."""
        return self._items.pop(client_msg_id, None)

    def discard(self, client_msg_id: str) -> PendingMessage | None:
        """The server refused the message for good (e.g. too long): stop resending it."""
        return self._items.pop(client_msg_id, None)

    def pending(self) -> list[PendingMessage]:
        """Every unacknowledged message, in the order it was first sent."""
        return list(self._items.values())

    def resend_frames(self) -> list[dict[str, Any]]:
        """The `message` frames to send after a (re)connect, in order, with the same ids."""
        return [item.frame() for item in self._items.values()]

    def get(self, client_msg_id: str) -> PendingMessage | None:
        return self._items.get(client_msg_id)

    def __contains__(self, client_msg_id: object) -> bool:
        return client_msg_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[PendingMessage]:
        return iter(list(self._items.values()))
