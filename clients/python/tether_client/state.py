"""Resume state of one conversation, without I/O.

- ``last_seq``: the highest seq applied; sent in `connect` to resume after it.
- De-duplication: an event with ``seq <= last_seq`` was applied already and is dropped.
- Gap detection: ``seq > last_seq + 1`` means events are missing. The server sends every
  seq once per socket, in order and without holes, so a gap is a lost frame: the client does
  not apply the event but reconnects with ``last_seq`` and the server replays from there.
- `ready` with ``resumed: false`` for an existing conversation means the events after the
  client's ``last_seq`` are no longer kept (or the client's state is not from this log): the
  application reloads the conversation over REST (`GET /api/conversations/<id>/messages/`,
  or `.../events/?after_seq=N` for what is still kept) and the state continues from the
  server's ``last_seq`` in `ready`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Arrival(Enum):
    NEXT = "next"  # exactly last_seq + 1: apply it
    DUPLICATE = "duplicate"  # already applied: drop it
    GAP = "gap"  # something before it is missing: resume from last_seq


@dataclass(frozen=True)
class ReadyOutcome:
    conversation_id: str
    resumed: bool
    new_conversation: bool  # the server created the conversation for this connect
    reload_required: bool  # resumed:false for an existing conversation
    reload_after_seq: int  # the client's last_seq before this ready (0 if none)
    server_last_seq: int
    replay_count: int


class ResumeState:
    def __init__(self, conversation_id: str | None = None, last_seq: int | None = None) -> None:
        if last_seq is not None and last_seq < 0:
            raise ValueError("last_seq must be >= 0")
        self.conversation_id = conversation_id
        self.last_seq = last_seq
        self.acked_seq = 0  # highest seq sent in a cumulative `ack`

    # --- connect ----------------------------------------------------------------------

    def connect_fields(self) -> dict[str, Any]:
        """The resume fields of the `connect` frame."""
        return {"conversation_id": self.conversation_id, "last_seq": self.last_seq}

    def on_ready(
        self, ready: Mapping[str, Any], sent_conversation_id: str | None, sent_last_seq: int | None
    ) -> ReadyOutcome:
        """Adopts a `ready` frame answering a `connect` that carried the given fields."""
        conversation_id = str(ready["conversation_id"])
        server_last_seq = int(ready.get("last_seq") or 0)
        resumed = bool(ready.get("resumed"))
        new_conversation = sent_conversation_id is None
        self.conversation_id = conversation_id
        if resumed:
            if self.last_seq is None:
                self.last_seq = 0  # a fresh client of an existing conversation: full replay follows
            reload_required = False
        else:
            # New conversation: empty log. Existing one: what we had is gone; continue from
            # the server's end and let the application reload over REST.
            reload_required = not new_conversation
            self.last_seq = server_last_seq
            self.acked_seq = min(self.acked_seq, server_last_seq)
        return ReadyOutcome(
            conversation_id=conversation_id,
            resumed=resumed,
            new_conversation=new_conversation,
            reload_required=reload_required,
            reload_after_seq=sent_last_seq or 0,
            server_last_seq=server_last_seq,
            replay_count=int(ready.get("replay_count") or 0),
        )

    # --- sequenced events -------------------------------------------------------------

    def classify(self, seq: int) -> Arrival:
        have = self.last_seq or 0
        if seq <= have:
            return Arrival.DUPLICATE
        if seq == have + 1:
            return Arrival.NEXT
        return Arrival.GAP

    def apply(self, seq: int) -> None:
        """Records ``seq`` as applied; it must be the next one."""
        if self.classify(seq) is not Arrival.NEXT:
            raise ValueError(f"seq {seq} does not follow {self.last_seq}")
        self.last_seq = seq

    # --- cumulative acks --------------------------------------------------------------

    def ack_pending(self) -> bool:
        return (self.last_seq or 0) > self.acked_seq

    def unacked_count(self) -> int:
        return max(0, (self.last_seq or 0) - self.acked_seq)

    def mark_acked(self, seq: int) -> None:
        self.acked_seq = max(self.acked_seq, seq)
