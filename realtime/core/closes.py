"""Every way the server ends a socket, in one table (docs/protocol.md, "Closes").

Daphne drops close reasons, so each close is announced by a frame first: an `error` frame whose
`code` names the cause, or a `reconnect` frame when the client should simply go elsewhere at
once. A reason carries the frame type, the error code and the close code together, so that no
call site can pair them wrongly; the connection row stores `code` as its close reason.

The client's duty after each close code (retry at once, back off, refresh, never retry) is
the SDKs' table: clients/close_codes.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CloseReason:
    # The `code` of the error frame (and the connection row's close_reason).
    code: str
    # The WebSocket close code; daphne lets applications use 1000 and 3000-4999 only.
    close_code: int
    # "error" (with `code` and `detail`) or "reconnect" (with `reason`).
    frame_type: str = "error"
    # Drop the connection right after the close frame instead of waiting for the peer's close:
    # for a peer that does not read, which would never read the close frame either.
    abort: bool = False
    # Close the TCP connection as soon as the close frame has left, without waiting for the
    # peer's close frame (daphne lingers for it up to DAPHNE_CLOSE_HANDSHAKE_TIMEOUT): for a peer
    # that has said nothing for a whole heartbeat timeout and will not answer either. Unlike
    # `abort`, what was sent still leaves: a peer that only stopped sending reads the frames.
    # We measured a silent client's connection kept 7.7 s with a 3 s timeout (issue 25).
    drop: bool = False

    def frame(self, detail: str, **extra: Any) -> dict:
        """The frame sent just before the close."""
        if self.frame_type == "reconnect":
            return {"type": "reconnect", "reason": detail, **extra}
        return {"type": "error", "code": self.code, "detail": detail, **extra}


FRAME_TOO_LARGE = CloseReason("frame_too_large", 4413)
BAD_FRAMES = CloseReason("bad_frame", 4400)
# No `connect` in time, first frame not `connect`, bad token, deactivated user, revoked token.
UNAUTHENTICATED = CloseReason("unauthenticated", 4401)
# A genuine access token past `exp`: refresh it and resume.
TOKEN_EXPIRED = CloseReason("token_expired", 4401)
FORBIDDEN = CloseReason("forbidden", 4403)
NOT_FOUND = CloseReason("not_found", 4404)
HEARTBEAT_TIMEOUT = CloseReason("heartbeat_timeout", 4408, drop=True)
# The socket does not read what it is sent (its unsent backlog passed the node's bound).
SLOW_CONSUMER = CloseReason("slow_consumer", 4408, abort=True)
# A newer socket of the same (conversation, client_id) took over: do not come back.
REPLACED = CloseReason("replaced", 4409)
RATE_LIMITED = CloseReason("rate_limited", 4429)
# The server cannot honestly continue this socket, but the client may resume at once
# (or after `retry_after_ms` when given).
GOING_AWAY = CloseReason("going_away", 4012)
# The node drains (SIGTERM): go to another node now.
DRAINING = CloseReason("going_away", 4012, frame_type="reconnect")
# An operator ended the socket (the admin's Disconnect): resume at once, as after `going_away`.
# Its own code so that the client, the connection row and the metrics tell it from a deploy.
OPERATOR_DISCONNECT = CloseReason("operator_disconnect", 4012)

# What a refused connect becomes, by the service error's code.
CONNECT_REFUSALS = {
    "unauthenticated": UNAUTHENTICATED,
    "forbidden": FORBIDDEN,
    "not_found": NOT_FOUND,
}
