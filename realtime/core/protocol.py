"""The v1 wire protocol without I/O (docs/protocol.md): frame parsing and validation, the
bad-frame budget and the resume plan. Everything here is pure and synchronous; the decisions
about one connection are realtime/connection/state.py's."""

from __future__ import annotations

import json
import re
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from realtime.core import closes
from realtime.core.closes import CloseReason

MAX_TOKEN_CHARS = 4096
MAX_SEQ = 2**53  # the largest integer every JSON client represents exactly
_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class ProtocolError(Exception):
    """An input the server refuses. `close` None means: answer with an error and stay open."""

    def __init__(self, code: str, detail: str, ref: Any = None, close: CloseReason | None = None):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.ref = ref
        self.close = close

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


@dataclass(frozen=True)
class RespondApproval:
    call_id: str
    decision: str  # "approve" or "deny"


APPROVAL_DECISIONS = ("approve", "deny")

ClientFrame = Connect | SendMessage | Ack | Ping | AuthRefresh | Cancel | RespondApproval


def frame_ref(frame: ClientFrame) -> Any:
    """What an error about a parsed frame refers to (its client_msg_id, id or run_id)."""
    for attr in ("client_msg_id", "run_id", "call_id", "id"):
        value = getattr(frame, attr, None)
        if value is not None:
            return value
    return None


def _frame_ref(obj: dict) -> Any:
    for key in ("client_msg_id", "id", "run_id", "call_id"):
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
            raise ProtocolError("frame_too_large", f"frame exceeds {max_bytes} bytes", close=closes.FRAME_TOO_LARGE)
        raise _bad("binary frames are not supported; send JSON text frames")
    # A str's UTF-8 size is at most 4 bytes per character: skip encoding when it cannot trip.
    if len(text) * 4 > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError("frame_too_large", f"frame exceeds {max_bytes} bytes", close=closes.FRAME_TOO_LARGE)
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
    if kind == "approval.respond":
        call_id = _uuid_str(_require(obj, "call_id", ref), "call_id", ref)
        decision = _require(obj, "decision", ref)
        if decision not in APPROVAL_DECISIONS:
            raise _bad("'decision' must be 'approve' or 'deny'", ref)
        return RespondApproval(call_id=call_id, decision=decision)
    raise _bad(f"unknown frame type '{kind[:40]}'", ref)


# --- budgets and plans --------------------------------------------------------------------


@dataclass
class BadFrameBudget:
    """At most `limit` bad frames in any `window` seconds."""

    limit: int
    window: float
    # Made at the first bad frame: most sockets never send one, and an empty deque is 720
    # bytes per socket (issue 12).
    _times: deque | None = None

    def spend(self, now: float) -> bool:
        """Records one bad frame; True while the connection is still within budget."""
        if self._times is None:
            self._times = deque()
        self._times.append(now)
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        return len(self._times) <= self.limit


@dataclass(frozen=True)
class ResumePlan:
    resumed: bool
    replay_from: int  # replay events with seq > replay_from
    replay_count: int


def plan_resume(
    client_last_seq: int | None, server_last_seq: int, first_kept_seq: int, created: bool, intact: bool = True
) -> ResumePlan:
    """What `ready` says and what follows it.

    A client claiming a seq beyond the server's (a bug, or another server's state) is treated
    as having nothing usable: it gets resumed:false and reloads. So does a client whose missed
    events are not all in the log (`intact` False: pruned, or a hole an operator made).
    """
    if created or client_last_seq is None:
        # A new conversation is empty; a fresh client of an existing one gets its whole log.
        if created:
            return ResumePlan(resumed=False, replay_from=server_last_seq, replay_count=0)
        client_last_seq = 0
    if client_last_seq > server_last_seq:
        return ResumePlan(resumed=False, replay_from=server_last_seq, replay_count=0)
    if client_last_seq + 1 < first_kept_seq or not intact:
        return ResumePlan(resumed=False, replay_from=server_last_seq, replay_count=0)
    return ResumePlan(resumed=True, replay_from=client_last_seq, replay_count=server_last_seq - client_last_seq)
