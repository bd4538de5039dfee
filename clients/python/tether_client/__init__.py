"""Async Python client for the Tether realtime protocol v1."""

from tether_client.backoff import Backoff
from tether_client.client import TetherClient, TokenProvider
from tether_client.close_rules import Action, Decision, decide
from tether_client.errors import AuthError, MessageRejected, TetherClosed, TetherError
from tether_client.events import (
    AgentCompleted,
    AgentDelta,
    AgentFailed,
    AgentStarted,
    AgentToolCall,
    AgentToolResult,
    ApprovalRequested,
    ApprovalResolved,
    Connected,
    Connecting,
    ConnectionEvent,
    Disconnected,
    Event,
    Message,
    MessageAcked,
    MessageCreated,
    MessageRefused,
    Reconnecting,
    ReloadRequired,
    SequencedEvent,
    SequencedEventType,
    ServerError,
    UnknownEvent,
    parse_event,
)
from tether_client.outbox import Outbox, PendingMessage
from tether_client.oversize import SentFrames
from tether_client.rest import Node, TokenPair, fetch_events, fetch_messages, fetch_nodes, obtain_token, refresh_access
from tether_client.state import Arrival, ReadyOutcome, ResumeState

__all__ = [
    "Action",
    "AgentCompleted",
    "AgentDelta",
    "AgentFailed",
    "AgentStarted",
    "AgentToolCall",
    "AgentToolResult",
    "ApprovalRequested",
    "ApprovalResolved",
    "Arrival",
    "AuthError",
    "Backoff",
    "Connected",
    "Connecting",
    "ConnectionEvent",
    "Decision",
    "Disconnected",
    "Event",
    "Message",
    "MessageAcked",
    "MessageCreated",
    "MessageRefused",
    "MessageRejected",
    "Node",
    "Outbox",
    "PendingMessage",
    "ReadyOutcome",
    "Reconnecting",
    "ReloadRequired",
    "ResumeState",
    "SequencedEvent",
    "SequencedEventType",
    "SentFrames",
    "ServerError",
    "TetherClient",
    "TetherClosed",
    "TetherError",
    "TokenPair",
    "TokenProvider",
    "UnknownEvent",
    "decide",
    "fetch_events",
    "fetch_messages",
    "fetch_nodes",
    "obtain_token",
    "parse_event",
    "refresh_access",
]

__version__ = "0.1.0"
