"""Which message a "frame too large" close refers to, so that it is never sent again.

The server refuses a frame over its size limit by closing the socket: 4413 after a
`frame_too_large` error frame when the application reads it, 1009 when the transport refuses it
before the application sees it. Neither names the frame (the server could not parse it), and
the limit is the server's setting. A client that resends its outbox after the reconnect would
send the same frame again and be closed again, forever, behind one poisoned message.

Rule: the refused frame is the largest frame sent on the closed socket that the server did not
accept. Every frame the server accepted was within the limit and the refused one was over it,
so the largest frame still unaccepted is over the limit too: either the refused one or one sent
after it, which the server would refuse as well. When that frame is a message still in the
outbox, the client drops it from the outbox (reporting it to the application) and resumes with
the rest; each such close costs the outbox one message, so the loop ends. When it is not a
message (a `connect` with a huge token, say), nothing the client can drop fixes it: stop.

A message the server acknowledged (`message.ack`) leaves the outbox and so stops counting; other
frames (`connect`, `ping`, `ack`, `auth.refresh`, `cancel`) are never acknowledged one by one
and count with the largest of them.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SentFrames:
    """Sizes (UTF-8 bytes of the JSON text) of the frames sent on one socket."""

    messages: dict[str, int] = field(default_factory=dict)  # client_msg_id -> largest frame sent
    largest_other: int = 0  # the largest frame that was not a `message`

    def record(self, frame: Mapping[str, Any], size: int) -> None:
        msg_id = frame.get("client_msg_id")
        if frame.get("type") == "message" and isinstance(msg_id, str):
            self.messages[msg_id] = max(size, self.messages.get(msg_id, 0))
        else:
            self.largest_other = max(self.largest_other, size)

    def culprit(self, pending: Container[str]) -> str | None:
        """The `client_msg_id` of the message to drop after a "frame too large" close, or None
        when no message still pending can be the refused frame. ``pending``: the outbox."""
        candidates = [(size, msg_id) for msg_id, size in self.messages.items() if msg_id in pending]
        if not candidates:
            return None
        size, msg_id = max(candidates, key=lambda c: c[0])  # the first sent among equals
        return msg_id if size > self.largest_other else None


def frame_size(text: str) -> int:
    """Bytes of a text frame's payload, as the server counts them."""
    return len(text.encode("utf-8", "surrogatepass"))
