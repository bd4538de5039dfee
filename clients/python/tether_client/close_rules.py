"""What to do after a socket closes: a pure function of the close code, the last `error`
frame and whether the server sent a `reconnect` frame.

| close code                          | action                | why (protocol v1)                              |
| ----------------------------------- | --------------------- | ---------------------------------------------- |
| `reconnect` frame received          | RETRY_NOW (rotate)    | node stops; resume elsewhere, nothing lost     |
|   (unless a STOP code other than 1000 follows)  |           |                                                |
| 1001 / 1012 / 4012                  | RETRY_NOW (rotate)    | server going away / restarting                 |
| 4429                                | RETRY_AFTER(ms)       | rate limited: wait the error's retry_after_ms  |
|   (no retry_after_ms known)         | BACKOFF               |                                                |
| 4401                                | REFRESH_TOKEN         | token expired/refused: renew it, then resume   |
| 4408                                | BACKOFF               | heartbeat timeout: resume                      |
| 1006 / 1011 / 1013 / 1014 / None    | BACKOFF (rotate)      | dropped / server error: resume elsewhere       |
| 1000                                | STOP                  | normal close                                   |
| 1009 / 4413                         | DROP_MESSAGE          | frame too large: drop the refused message from |
|                                     |                       | the outbox, report it, resume at once with the |
|                                     |                       | rest; STOP if no message can be blamed         |
|                                     |                       | (``oversize.py``): a resend would loop forever |
| 4400                                | STOP                  | too many bad frames: a client bug              |
| 4403                                | STOP                  | not your conversation                          |
| 4404                                | STOP                  | no such conversation: the app starts a new one |
| 4409                                | STOP                  | replaced by a newer socket of this client_id   |
| 1002 / 1003 / 1007 / 1008 / 1010    | STOP                  | protocol / policy violations: a client bug     |
| other 4400-4499                     | STOP                  | client-error class: retrying cannot fix it     |
| any other code                      | BACKOFF (rotate)      | unknown: assume transient                      |

Daphne drops close reasons and a dying peer may not send a close frame at all: when the code
is 1006 (or unknown) but the error frame sent just before names the cause, the cause decides
(`going_away` -> as 4012, `forbidden` -> as 4403, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Action(Enum):
    RETRY_NOW = "retry_now"
    RETRY_AFTER = "retry_after"
    BACKOFF = "backoff"
    REFRESH_TOKEN = "refresh_token"
    DROP_MESSAGE = "drop_message"  # a frame was too large: never resend it (see ``oversize``)
    STOP = "stop"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    delay_ms: int = 0  # only for RETRY_AFTER
    rotate: bool = False  # prefer the next endpoint for the retry

    @property
    def retries(self) -> bool:
        return self.action is not Action.STOP


GOING_AWAY_CODES = frozenset({1001, 1012, 4012})
STOP_CODES: Mapping[int, str] = {
    1000: "normal close",
    1002: "websocket protocol error",
    1003: "unsupported data",
    1007: "invalid frame payload",
    1008: "policy violation",
    1010: "extension negotiation failed",
    4400: "too many bad frames",
    4403: "not your conversation",
    4404: "no such conversation",
    4409: "replaced by a newer connection of this client",
}
FRAME_TOO_LARGE_CODES = frozenset({1009, 4413})
# error `code` sent before each 4xxx close -> the close code it names
ERROR_CODE_CLOSES: Mapping[str, int] = {
    "going_away": 4012,
    "operator_disconnect": 4012,
    "unauthenticated": 4401,
    "token_expired": 4401,
    "forbidden": 4403,
    "not_found": 4404,
    "heartbeat_timeout": 4408,
    "replaced": 4409,
    "frame_too_large": 4413,
}
_UNKNOWN_CODES = frozenset({1005, 1006})


def _retry_after(error: Mapping[str, Any] | None, retry_after_ms: int | None) -> int | None:
    if retry_after_ms is not None:
        return max(0, int(retry_after_ms))
    if error is not None:
        value = error.get("retry_after_ms")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return max(0, int(value))
    return None


def _effective_code(code: int | None, error: Mapping[str, Any] | None) -> int | None:
    """The close code, or the one the last error frame names when the close lost it."""
    if (code is None or code in _UNKNOWN_CODES) and error is not None:
        named = ERROR_CODE_CLOSES.get(str(error.get("code")))
        if named is not None:
            return named
        if error.get("code") == "rate_limited" and error.get("ref") is None:
            return 4429  # the per-message limit (with ref) keeps the socket open
    return code


def decide(
    code: int | None,
    *,
    error: Mapping[str, Any] | None = None,
    reconnect: bool = False,
    retry_after_ms: int | None = None,
) -> Decision:
    """The client's next step after a close with ``code`` (None: no close frame at all).

    ``error`` is the `error` frame received just before the close (if any), ``reconnect``
    whether a `reconnect` frame was received on this socket, ``retry_after_ms`` an explicit
    wait (otherwise taken from ``error``).
    """
    effective = _effective_code(code, error)
    label = f"close {code}" if code is not None else "no close frame"
    if error is not None and error.get("code"):
        label += f" ({error.get('code')})"

    if effective in FRAME_TOO_LARGE_CODES:
        return Decision(Action.DROP_MESSAGE, f"{label}: frame too large")
    if effective is not None and effective in STOP_CODES and not (reconnect and effective == 1000):
        return Decision(Action.STOP, f"{label}: {STOP_CODES[effective]}")
    if reconnect or effective in GOING_AWAY_CODES:
        return Decision(Action.RETRY_NOW, f"{label}: server going away", rotate=True)
    if effective == 4429:
        wait = _retry_after(error, retry_after_ms)
        if wait is None:
            return Decision(Action.BACKOFF, f"{label}: rate limited")
        return Decision(Action.RETRY_AFTER, f"{label}: rate limited", delay_ms=wait)
    if effective == 4401:
        return Decision(Action.REFRESH_TOKEN, f"{label}: token refused or expired")
    if effective == 4408:
        return Decision(Action.BACKOFF, f"{label}: heartbeat timeout")
    if effective is not None and 4400 <= effective <= 4499:
        return Decision(Action.STOP, f"{label}: client error")
    return Decision(Action.BACKOFF, f"{label}: connection lost", rotate=True)
