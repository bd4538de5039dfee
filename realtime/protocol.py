"""The v1 wire protocol without I/O: frame parsing and validation, connection state,
seq ordering rules and the bad-frame budget. Everything here is pure and synchronous."""

from __future__ import annotations

import json
import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# --- close codes (docs/protocol.md, "Close codes") ----------------------------------------
CLOSE_NORMAL = 1000
CLOSE_TOO_LARGE = 4413
CLOSE_GOING_AWAY = 4012
CLOSE_BAD_FRAMES = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_HEARTBEAT = 4408
CLOSE_REPLACED = 4409
CLOSE_RATE_LIMITED = 4429

# error `code` sent before each 4xxx close (daphne drops close reasons)
CLOSE_REASONS = {
    CLOSE_TOO_LARGE: "frame_too_large",
    CLOSE_GOING_AWAY: "going_away",
    CLOSE_BAD_FRAMES: "bad_frame",
    CLOSE_UNAUTHENTICATED: "unauthenticated",
    CLOSE_FORBIDDEN: "forbidden",
    CLOSE_NOT_FOUND: "not_found",
    CLOSE_HEARTBEAT: "heartbeat_timeout",
    CLOSE_REPLACED: "replaced",
    CLOSE_RATE_LIMITED: "rate_limited",
}

MAX_TOKEN_CHARS = 4096
MAX_CLIENT_ID_CHARS = 64
MAX_SEQ = 2**53  # the largest integer every JSON client represents exactly
_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class ProtocolError(Exception):
    """An input the server refuses. `close_code` None means: answer and stay open."""

    def __init__(self, code: str, detail: str, ref: Any = None, close_code: int | None = None):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.ref = ref
        self.close_code = close_code

    def frame(self) -> dict:
        return error_frame(self.code, self.detail, self.ref)


def error_frame(code: str, detail: str, ref: Any = None, **extra: Any) -> dict:
    frame: dict[str, Any] = {"type": "error", "code": code, "detail": detail}
    if ref is not None:
        frame["ref"] = ref
    frame.update(extra)
    return frame


# --- client frames ------------------------------------------------------------------------


@dataclass(frozen=True)
class Connect:
    token: str
    conversation_id: str | None
    last_seq: int | None
    client_id: str


@dataclass(frozen=True)
class SendMessage:
    client_msg_id: str
    text: str


@dataclass(frozen=True)
class Ack:
    seq: int


@dataclass(frozen=True)
class Ping:
    id: Any


@dataclass(frozen=True)
class AuthRefresh:
    refresh: str | None
    access: str | None


@dataclass(frozen=True)
class Cancel:
    run_id: str


ClientFrame = Connect | SendMessage | Ack | Ping | AuthRefresh | Cancel


def _frame_ref(obj: dict) -> Any:
    for key in ("client_msg_id", "id", "run_id"):
        value = obj.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return value if not isinstance(value, str) else value[:64]
    return None


def _bad(detail: str, ref: Any = None) -> ProtocolError:
    return ProtocolError("bad_frame", detail, ref)


def _require(obj: dict, key: str, ref: Any) -> Any:
    if key not in obj:
        raise _bad(f"missing field '{key}'", ref)
    return obj[key]


def _uuid_str(value: Any, key: str, ref: Any) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise _bad(f"'{key}' must be a UUID string", ref)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise _bad(f"'{key}' must be a UUID string", ref) from None


def _seq(value: Any, key: str, ref: Any) -> int:
    # bool is an int in Python but not in the protocol.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"'{key}' must be an integer", ref)
    if value < 0 or value > MAX_SEQ:
        raise _bad(f"'{key}' must be between 0 and {MAX_SEQ}", ref)
    return value


def _nonempty_str(value: Any, key: str, ref: Any, max_chars: int) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(f"'{key}' must be a non-empty string", ref)
    if len(value) > max_chars:
        raise ProtocolError("too_long", f"'{key}' is longer than {max_chars} characters", ref)
    return value


def decode_frame(text: str | None, data: bytes | None, max_bytes: int) -> dict:
    """Turns a raw WebSocket frame into a JSON object, or raises ProtocolError."""
    if text is None:
        if data is not None and len(data) > max_bytes:
            raise ProtocolError("frame_too_large", f"frame exceeds {max_bytes} bytes", close_code=CLOSE_TOO_LARGE)
        raise _bad("binary frames are not supported; send JSON text frames")
    # A str's UTF-8 size is at most 4 bytes per character: skip encoding when it cannot trip.
    if len(text) * 4 > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError("frame_too_large", f"frame exceeds {max_bytes} bytes", close_code=CLOSE_TOO_LARGE)
    try:
        obj = json.loads(text)
    except RecursionError:
        raise _bad("JSON nested too deeply") from None
    except ValueError:
        raise _bad("frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise _bad("frame must be a JSON object")
    return obj


def parse_frame(obj: dict, max_message_chars: int) -> ClientFrame:
    """Validates a decoded client frame and returns its typed form."""
    ref = _frame_ref(obj)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise _bad("missing field 'type'", ref)
    if kind == "connect":
        token = _nonempty_str(_require(obj, "token", ref), "token", ref, MAX_TOKEN_CHARS)
        conversation_id = obj.get("conversation_id")
        if conversation_id is not None:
            conversation_id = _uuid_str(conversation_id, "conversation_id", ref)
        last_seq = obj.get("last_seq")
        if last_seq is not None:
            last_seq = _seq(last_seq, "last_seq", ref)
        client_id = _require(obj, "client_id", ref)
        if not isinstance(client_id, str) or not _CLIENT_ID_RE.match(client_id):
            raise _bad("'client_id' must be a string of 1-64 letters, digits or -_.:", ref)
        return Connect(token=token, conversation_id=conversation_id, last_seq=last_seq, client_id=client_id)
    if kind == "message":
        client_msg_id = _uuid_str(_require(obj, "client_msg_id", ref), "client_msg_id", ref)
        text = _nonempty_str(_require(obj, "text", ref), "text", ref, max_message_chars)
        return SendMessage(client_msg_id=client_msg_id, text=text)
    if kind == "ack":
        return Ack(seq=_seq(_require(obj, "seq", ref), "seq", ref))
    if kind == "ping":
        return Ping(id=obj.get("id"))
    if kind == "auth.refresh":
        refresh, access = obj.get("refresh"), obj.get("access")
        if (refresh is None) == (access is None):
            raise _bad("auth.refresh needs exactly one of 'refresh' or 'access'", ref)
        if refresh is not None:
            refresh = _nonempty_str(refresh, "refresh", ref, MAX_TOKEN_CHARS)
        if access is not None:
            access = _nonempty_str(access, "access", ref, MAX_TOKEN_CHARS)
        return AuthRefresh(refresh=refresh, access=access)
    if kind == "cancel":
        return Cancel(run_id=_uuid_str(_require(obj, "run_id", ref), "run_id", ref))
    raise _bad(f"unknown frame type '{kind[:40]}'", ref)


# --- connection state ---------------------------------------------------------------------


class Phase(Enum):
    AWAITING_CONNECT = "awaiting_connect"
    READY = "ready"
    CLOSED = "closed"


def check_phase(phase: Phase, frame: ClientFrame) -> None:
    """Which frames each phase accepts."""
    if phase is Phase.CLOSED:
        raise ProtocolError("bad_frame", "connection is closing")
    if phase is Phase.AWAITING_CONNECT and not isinstance(frame, Connect):
        raise ProtocolError(
            "unauthenticated", "the first frame must be 'connect'", close_code=CLOSE_UNAUTHENTICATED
        )
    if phase is Phase.READY and isinstance(frame, Connect):
        raise _bad("already connected; open a new socket to switch conversations")


@dataclass
class BadFrameBudget:
    """At most `limit` bad frames in any `window` seconds."""

    limit: int
    window: float
    _times: deque = field(default_factory=deque)

    def spend(self, now: float) -> bool:
        """Records one bad frame; True while the connection is still within budget."""
        self._times.append(now)
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        return len(self._times) <= self.limit


# --- seq rules ----------------------------------------------------------------------------


class Arrival(Enum):
    DUPLICATE = "duplicate"  # at or below what the client already has
    NEXT = "next"  # exactly the next seq: send it
    GAP = "gap"  # something is missing before it: read the gap from the log


@dataclass
class DeliveryCursor:
    """Highest seq sent on this socket; every seq is sent once, in order, without holes."""

    sent_seq: int = 0

    def classify(self, seq: int) -> Arrival:
        if seq <= self.sent_seq:
            return Arrival.DUPLICATE
        if seq == self.sent_seq + 1:
            return Arrival.NEXT
        return Arrival.GAP

    def advance(self, seq: int) -> None:
        if seq != self.sent_seq + 1:
            raise ValueError(f"seq {seq} does not follow {self.sent_seq}")
        self.sent_seq = seq


@dataclass(frozen=True)
class ResumePlan:
    resumed: bool
    replay_from: int  # replay events with seq > replay_from
    replay_count: int


def plan_resume(client_last_seq: int | None, server_last_seq: int, first_kept_seq: int, created: bool) -> ResumePlan:
    """What `ready` says and what follows it.

    A client claiming a seq beyond the server's (a bug, or another server's state) is treated
    as having nothing usable: it gets resumed:false and reloads.
    """
    if created or client_last_seq is None:
        # A new conversation is empty; a fresh client of an existing one gets its whole log.
        if created:
            return ResumePlan(resumed=False, replay_from=server_last_seq, replay_count=0)
        client_last_seq = 0
    if client_last_seq > server_last_seq:
        return ResumePlan(resumed=False, replay_from=server_last_seq, replay_count=0)
    if client_last_seq + 1 < first_kept_seq:
        return ResumePlan(resumed=False, replay_from=server_last_seq, replay_count=0)
    return ResumePlan(resumed=True, replay_from=client_last_seq, replay_count=server_last_seq - client_last_seq)
