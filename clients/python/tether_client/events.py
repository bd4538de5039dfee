"""Typed events yielded by ``TetherClient.events()``.

Sequenced events (the conversation's durable history) carry ``seq`` and arrive exactly once,
in seq order. Connection-state and other live notices carry no seq.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Message:
    id: str
    role: str  # "user" | "assistant"
    text: str
    client_msg_id: str | None = None

    @classmethod
    def from_frame(cls, data: Mapping[str, Any] | None) -> Message:
        data = data or {}
        return cls(
            id=str(data.get("id", "")),
            role=str(data.get("role", "")),
            text=str(data.get("text", "")),
            client_msg_id=data.get("client_msg_id"),
        )


# --- sequenced events -----------------------------------------------------------------------


@dataclass(frozen=True)
class SequencedEvent:
    seq: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def type(self) -> str:
        return str(self.raw.get("type"))


@dataclass(frozen=True)
class MessageCreated(SequencedEvent):
    """`message.created`: a user message (any tab/device of the conversation) was stored."""

    message: Message


@dataclass(frozen=True)
class AgentStarted(SequencedEvent):
    run_id: str
    in_reply_to: str


@dataclass(frozen=True)
class AgentDelta(SequencedEvent):
    run_id: str
    index: int
    text: str


@dataclass(frozen=True)
class AgentCompleted(SequencedEvent):
    run_id: str
    message: Message


@dataclass(frozen=True)
class AgentFailed(SequencedEvent):
    run_id: str
    error: str
    cancelled: bool = False


# --- tools and approvals (docs/protocol.md, "Tools and approvals") ---------------------------


@dataclass(frozen=True)
class AgentToolCall(SequencedEvent):
    """`agent.tool_call`: the agent calls a tool now. ``effect`` is its class: `read`,
    `idempotent`, `local` or `once`. Its ``call_id`` never changes across takeovers."""

    run_id: str
    call_id: str
    tool: str
    arguments: Mapping[str, Any]
    effect: str


@dataclass(frozen=True)
class AgentToolResult(SequencedEvent):
    """`agent.tool_result`, exactly one per ``call_id``. ``status``: `ok` (``result`` is set,
    unless ``truncated``: it was over the server's size cap), `error`, `unknown` (a `once` call
    whose outcome was lost: it may or may not have happened) or `denied` (never made); the last
    three carry ``error``."""

    run_id: str
    call_id: str
    status: str
    result: Any = None
    error: str | None = None
    truncated: bool = False


@dataclass(frozen=True)
class ApprovalRequested(SequencedEvent):
    """`approval.requested`: the run waits for a person's decision on this call; answer with
    ``client.approve(call_id)`` or ``client.deny(call_id)`` (from any socket of the
    conversation). ``reason``: `policy` or `outcome_unknown` (a `once` call's outcome was lost:
    call it again?). ``expires_at``: Unix seconds."""

    run_id: str
    call_id: str
    tool: str
    arguments: Mapping[str, Any]
    reason: str
    expires_at: int


@dataclass(frozen=True)
class ApprovalResolved(SequencedEvent):
    """`approval.resolved`, exactly one per `approval.requested`. ``decision``: `approved`,
    `denied` or `expired`; ``by``: the answering socket's ``client_id``, `timeout`, `admin` or
    `server`."""

    run_id: str
    call_id: str
    decision: str
    by: str


@dataclass(frozen=True)
class UnknownEvent(SequencedEvent):
    """A sequenced event of a type this SDK does not know (protocol extensions)."""


# --- connection state and live notices ------------------------------------------------------


@dataclass(frozen=True)
class Connecting:
    endpoint: str
    attempt: int  # consecutive failed attempts before this one (0: first try)


@dataclass(frozen=True)
class Connected:
    resumed: bool
    conversation_id: str
    endpoint: str
    node: str | None
    server_last_seq: int
    replay_count: int


@dataclass(frozen=True)
class Reconnecting:
    attempt: int  # 1 for the first retry after a loss
    delay: float  # seconds before the attempt
    reason: str


@dataclass(frozen=True)
class Disconnected:
    code: int | None  # close code (None: no close frame, e.g. the client gave up on a dead socket)
    reason: str
    final: bool = False  # True: the client stopped; events() ends after this event
    error_code: str | None = None  # `code` of the server's error frame before the close


@dataclass(frozen=True)
class ReloadRequired:
    """`ready` said ``resumed: false`` for an existing conversation: the events after
    ``after_seq`` are no longer kept. Reload the conversation over REST
    (``await client.fetch_messages()``); live events continue after ``server_last_seq``."""

    conversation_id: str
    after_seq: int
    server_last_seq: int


@dataclass(frozen=True)
class MessageAcked:
    client_msg_id: str
    seq: int
    duplicate: bool


@dataclass(frozen=True)
class ServerError:
    """An `error` frame that did not (yet) close the socket, e.g. ``rate_limited`` or
    ``refresh_failed``. Answers to ``respond_approval`` come as ``not_found`` (``ref``: the
    ``call_id``; no approval for it in this conversation) or ``already_decided`` (``ref``: the
    ``call_id``, ``decision``: the decision that stands, `approved`, `denied` or `expired`)."""

    code: str
    detail: str
    ref: Any = None
    retry_after_ms: int | None = None
    decision: str | None = None


@dataclass(frozen=True)
class MessageRefused:
    """The server refused a message sent with ``send()`` for good: it left the outbox and is
    never sent again (a resend would be refused again, forever). ``error_code``: `too_long`
    (text over the server's limit; the socket stays open), `bad_frame`, or `frame_too_large`
    (the frame was over the server's size limit: the socket was closed with ``close_code``
    4413 or 1009 and the client resumed without it). Its ``wait_acked`` raises
    ``MessageRejected``."""

    client_msg_id: str
    text: str
    error_code: str
    close_code: int | None = None


ConnectionEvent = Connecting | Connected | Reconnecting | Disconnected | ReloadRequired
Event = (
    MessageCreated
    | AgentStarted
    | AgentDelta
    | AgentCompleted
    | AgentFailed
    | AgentToolCall
    | AgentToolResult
    | ApprovalRequested
    | ApprovalResolved
    | UnknownEvent
    | Connecting
    | Connected
    | Reconnecting
    | Disconnected
    | ReloadRequired
    | MessageAcked
    | MessageRefused
    | ServerError
)


def is_sequenced(frame: Mapping[str, Any]) -> bool:
    """Whether a server frame belongs to the conversation's sequenced history."""
    seq = frame.get("seq")
    return (
        isinstance(seq, int)
        and not isinstance(seq, bool)
        and frame.get("type") not in ("message.ack", "ready", "error")
    )


SequencedEventType = (
    MessageCreated
    | AgentStarted
    | AgentDelta
    | AgentCompleted
    | AgentFailed
    | AgentToolCall
    | AgentToolResult
    | ApprovalRequested
    | ApprovalResolved
    | UnknownEvent
)


def parse_event(frame: Mapping[str, Any]) -> SequencedEventType:
    """The typed form of a sequenced server frame (or a REST events entry)."""
    kind = frame.get("type")
    seq = int(frame["seq"])
    if kind == "message.created":
        return MessageCreated(seq=seq, raw=frame, message=Message.from_frame(frame.get("message")))
    if kind == "agent.started":
        return AgentStarted(
            seq=seq, raw=frame, run_id=str(frame.get("run_id")), in_reply_to=str(frame.get("in_reply_to"))
        )
    if kind == "agent.delta":
        return AgentDelta(
            seq=seq,
            raw=frame,
            run_id=str(frame.get("run_id")),
            index=int(frame.get("index", 0)),
            text=str(frame.get("text", "")),
        )
    if kind == "agent.completed":
        return AgentCompleted(
            seq=seq, raw=frame, run_id=str(frame.get("run_id")), message=Message.from_frame(frame.get("message"))
        )
    if kind == "agent.failed":
        return AgentFailed(
            seq=seq,
            raw=frame,
            run_id=str(frame.get("run_id")),
            error=str(frame.get("error", "")),
            cancelled=bool(frame.get("cancelled", False)),
        )
    if kind == "agent.tool_call":
        return AgentToolCall(
            seq=seq,
            raw=frame,
            run_id=str(frame.get("run_id")),
            call_id=str(frame.get("call_id")),
            tool=str(frame.get("tool", "")),
            arguments=_arguments(frame),
            effect=str(frame.get("effect", "")),
        )
    if kind == "agent.tool_result":
        error = frame.get("error")
        return AgentToolResult(
            seq=seq,
            raw=frame,
            run_id=str(frame.get("run_id")),
            call_id=str(frame.get("call_id")),
            status=str(frame.get("status", "")),
            result=frame.get("result"),
            error=None if error is None else str(error),
            truncated=bool(frame.get("truncated", False)),
        )
    if kind == "approval.requested":
        return ApprovalRequested(
            seq=seq,
            raw=frame,
            run_id=str(frame.get("run_id")),
            call_id=str(frame.get("call_id")),
            tool=str(frame.get("tool", "")),
            arguments=_arguments(frame),
            reason=str(frame.get("reason", "")),
            expires_at=int(frame.get("expires_at") or 0),
        )
    if kind == "approval.resolved":
        return ApprovalResolved(
            seq=seq,
            raw=frame,
            run_id=str(frame.get("run_id")),
            call_id=str(frame.get("call_id")),
            decision=str(frame.get("decision", "")),
            by=str(frame.get("by", "")),
        )
    return UnknownEvent(seq=seq, raw=frame)


def _arguments(frame: Mapping[str, Any]) -> Mapping[str, Any]:
    arguments = frame.get("arguments")
    return arguments if isinstance(arguments, Mapping) else {}
