"""The connection state machine: every decision about one socket, without I/O.
Design: docs/architecture.md, "One socket".

Modelled on python-websockets' `Protocol`: the consumer (realtime/connection/consumer.py) feeds it what
happened (a frame, the clock, the outcome of a service call, the live feed, the resync) and
performs the actions it returns (send a frame, close, run the connect, read the log, store an
ack). Nothing here awaits, reads settings (they arrive as `Limits`) or reads a clock: `now` is
the event loop's monotonic time and `wall` is Unix time (token expiry is in Unix seconds).

Rules:
- Only one socket's consumer drives a ConnectionState (realtime/connection/consumer.py, with its
  session and frame handlers, session.py and frames.py). tests/test_connection_state.py covers
  every transition without a server, Redis or database.
- Sequenced events reach the client only through `next_delivery` / `delivered`, from one
  sender task per socket: that is what makes "each seq once, in order, without holes" hold.
- Every close is a `Close` action carrying a reason of realtime/core/closes.py; after it, every
  input is ignored (the state is CLOSED and stays so).

Why one module of ~550 lines: the phases, the delivery cursor, the ack bookkeeping, the frame
budgets and the deadlines all read and change one another's fields on every input (a frame
over budget can close; a close stops the sender; a resync changes what the sender reads).
Split across modules they would need each other's private state; together, one test file
walks every transition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from realtime.core import closes
from realtime.core import protocol as p
from realtime.core.buckets import LocalBucket, Rule
from realtime.core.closes import CloseReason


class Phase(Enum):
    AWAITING_CONNECT = "awaiting_connect"  # socket open, no `connect` frame yet
    CONNECTING = "connecting"  # `connect` accepted; the consumer authenticates and opens
    READY = "ready"  # `ready` sent; replay and live events flow through the sender
    CLOSED = "closed"


@dataclass(frozen=True)
class Limits:
    """The settings one socket obeys (built once per node from Django settings by the consumer)."""

    max_frame_bytes: int = 64 * 1024
    max_message_chars: int = 16000
    connect_timeout: float = 10.0  # from the socket opening to the `connect` frame
    heartbeat_interval_ms: int = 25000  # announced in `ready`
    heartbeat_timeout: float = 50.0  # without any client frame
    token_warning: float = 60.0  # `auth.expiring` this long before the access token expires
    bad_frame_limit: int = 10
    bad_frame_window: float = 60.0
    frame_capacity: float = 60.0  # inbound frames: a token bucket of this size...
    frame_per_second: float = 6.0  # ...refilled at this rate
    frame_overrun_close: int = 20  # frames over the rate in a row before 4429
    ack_flush_interval: float = 30.0  # acks are stored at most this often (besides every resync)
    replay_batch: int = 500  # events per read of the log
    # Live events kept in memory while the sender is behind; beyond, they are read from the log.
    inline_events: int = 1000
    # Suggested wait after a transient failure (database or Redis unavailable).
    unavailable_retry_ms: int = 1000
    # The sender waits while the socket's transport holds more than this unsent...
    max_unsent_bytes: int = 1024 * 1024
    # ...and closes it as a slow consumer when that lasts this long.
    send_stall_timeout: float = 30.0


# --- actions (what the consumer must do) -------------------------------------------------------


@dataclass(frozen=True)
class Send:
    frame: dict


@dataclass(frozen=True)
class Close:
    reason: CloseReason
    detail: str
    extra: dict = field(default_factory=dict)

    def frame(self) -> dict:
        return self.reason.frame(self.detail, **self.extra)


@dataclass(frozen=True)
class Authenticate:
    """Run the connect: verify the token, limits, slot, live feed, open the session."""

    frame: p.Connect


@dataclass(frozen=True)
class PostMessage:
    frame: p.SendMessage


@dataclass(frozen=True)
class CancelRun:
    run_id: str


@dataclass(frozen=True)
class Renew:
    frame: p.AuthRefresh


@dataclass(frozen=True)
class FlushAck:
    seq: int


@dataclass(frozen=True)
class AnswerApproval:
    frame: p.RespondApproval


@dataclass(frozen=True)
class CheckLimit:
    """Take one token of a shared rate limit (`kind`, in `bucket`); answer with `limit_checked`."""

    kind: str
    bucket: str


Action = Send | Close | Authenticate | PostMessage | CancelRun | Renew | FlushAck | CheckLimit | AnswerApproval


# --- the sender's steps -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadLog:
    """Read events with seq in (after, upto] (upto None: to the log's end), at most `limit`."""

    after: int
    upto: int | None
    limit: int


@dataclass(frozen=True)
class Deliver:
    """Send these wire frames (seq, JSON text), in this order, calling `delivered` with each seq."""

    frames: list[tuple[int, str]]


# What a resync finding becomes (services.touch_connections states).
RESYNC_CLOSES = {
    "replaced": Close(closes.REPLACED, "a newer connection of this client took over"),
    # Reaped (this node was taken for dead, e.g. cut off from Redis for longer than the node
    # TTL): the client did nothing wrong and must come back, which 4409 would forbid.
    "closed": Close(closes.GOING_AWAY, "this connection was closed by the server; resume"),
    "inactive": Close(closes.UNAUTHENTICATED, "user is deactivated"),
    "revoked": Close(closes.UNAUTHENTICATED, "token was revoked; sign in again"),
}

# How a socket ends on each control message of the fan-out (realtime.fanout.publish.CONTROL_ACTIONS,
# checked against this table by tests/test_fanout_control.py).
CONTROL_CLOSES = {
    # A newer socket of the same (conversation, client_id) took over: do not come back.
    "replaced": Close(closes.REPLACED, "a newer connection of this client took over"),
    # An operator's Disconnect in the admin: the client resumes at once, as after a drain,
    # but the frame and the metrics say who ended it (issue 23).
    "disconnect": Close(closes.OPERATOR_DISCONNECT, "disconnected by an operator; resume"),
}

# Refusals of a connect by what refused it (the consumer reports the kind).
LIMIT_DETAILS = {
    "user": "too many connection attempts",
    "ip": "too many connection attempts",
    "slots": "too many open connections for this user",
    "conversations": "too many new conversations started by this user",
}


class ConnectionState:
    """One socket's state. Every field is written only by the methods of this class."""

    def __init__(self, limits: Limits, now: float):
        self.limits = limits
        self.phase = Phase.AWAITING_CONNECT
        # Loop time the socket opened: the connect deadline counts from here.
        self.opened_at = now
        # Loop time of the last client frame of any kind: the heartbeat deadline counts from here.
        self.last_frame_at = now
        # Set by the first Close (a server close).
        self.close: Close | None = None
        # (close code, reason) the connection row records, set by the first ending of any kind.
        self.ended: tuple[int | None, str] | None = None

        # Inbound frame rate: a token bucket, and how many frames in a row found it empty.
        self.frame_bucket = LocalBucket(Rule(limits.frame_capacity, limits.frame_per_second), now)
        self.frame_overruns = 0
        # Bad frames within the sliding window.
        self.budget = p.BadFrameBudget(limits.bad_frame_limit, limits.bad_frame_window)

        # Unix time the current access token expires (0 until the token was verified), and
        # whether `auth.expiring` was sent for it.
        self.access_expires_at = 0
        self.expiry_warned = False

        # Delivery. `sent_seq`: highest seq sent on this socket (the cursor; meaningful from
        # READY on). `known_upto`: highest seq known to be committed. `pending`: the JSON text
        # of frames in hand (from the live feed or a log read) with seq > sent_seq, by seq.
        # `to_log_end`: the live feed may have lost announcements; read the log to its end.
        self.sent_seq = 0
        self.known_upto = 0
        self.pending: dict[int, str] = {}
        self.to_log_end = False

        # Loop time the sender found the transport's backlog over the bound, while it stays over.
        self.stalled_since: float | None = None

        # Acks: highest seq the client acknowledged; highest stored; loop time of the last store.
        self.acked_seq = 0
        self.acked_written = 0
        self._ack_written_at = float("-inf")

    # --- inputs: the client ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

    def receive(self, text: str | None, data: bytes | None, now: float) -> list[Action]:
        """A client frame arrived."""
        if self.closed:
            return []
        self.last_frame_at = now
        verdict = self.frame_bucket.take(now=now)
        if not verdict.allowed:
            self.frame_overruns += 1
            retry = verdict.retry_after_ms
            if self.frame_overruns > self.limits.frame_overrun_close:
                return self._close(closes.RATE_LIMITED, "too many frames", retry_after_ms=retry)
            return [Send(p.error_frame("rate_limited", "too many frames; slow down", retry_after_ms=retry))]
        self.frame_overruns = 0
        try:
            obj = p.decode_frame(text, data, self.limits.max_frame_bytes)
            frame = p.parse_frame(obj, self.limits.max_message_chars)
            self._check_phase(frame)
        except p.ProtocolError as err:
            return self._refuse(err, now)
        if isinstance(frame, p.Ping):
            return [Send({"type": "pong", "id": frame.id})]
        if isinstance(frame, p.Connect):
            self.phase = Phase.CONNECTING
            return [Authenticate(frame)]
        if isinstance(frame, p.Ack):
            return self._on_ack(frame.seq, now)
        if isinstance(frame, p.SendMessage):
            return [PostMessage(frame)]
        if isinstance(frame, p.AuthRefresh):
            return [Renew(frame)]
        if isinstance(frame, p.RespondApproval):
            return [AnswerApproval(frame)]
        return [CancelRun(frame.run_id)]

    def _check_phase(self, frame: p.ClientFrame) -> None:
        if self.phase is Phase.AWAITING_CONNECT and not isinstance(frame, p.Connect):
            raise p.ProtocolError("unauthenticated", "the first frame must be 'connect'", close=closes.UNAUTHENTICATED)
        if self.phase is Phase.CONNECTING and not isinstance(frame, p.Ping):
            raise p.ProtocolError("bad_frame", "wait for 'ready' before sending this", p.frame_ref(frame))
        if self.phase is Phase.READY and isinstance(frame, p.Connect):
            raise p.ProtocolError("bad_frame", "already connected; open a new socket to switch conversations")

    def _refuse(self, err: p.ProtocolError, now: float) -> list[Action]:
        if err.close is not None:
            return self._close(err.close, err.detail)
        actions: list[Action] = [Send(err.frame())]
        if err.code in ("bad_frame", "too_long") and not self.budget.spend(now):
            actions += self._close(
                closes.BAD_FRAMES, f"more than {self.budget.limit} bad frames in {self.budget.window:g} s"
            )
        return actions

    def _on_ack(self, seq: int, now: float) -> list[Action]:
        """Acks only steer retention and the admin, so they are stored at most every
        `ack_flush_interval` (and at resync and close), not once per frame."""
        self.acked_seq = max(self.acked_seq, seq)
        if now - self._ack_written_at >= self.limits.ack_flush_interval and self.acked_seq > self.acked_written:
            self._ack_written_at = now
            self.acked_written = self.acked_seq
            return [FlushAck(self.acked_seq)]
        return []

    def ack_flush_failed(self, seq: int) -> None:
        """Storing an ack failed (database blip): it is stored again at the next chance."""
        if self.acked_written == seq:
            self.acked_written = 0
            self._ack_written_at = float("-inf")

    def unflushed_ack(self) -> int | None:
        """The ack to store when the socket closes, if any."""
        return self.acked_seq if self.acked_seq > self.acked_written else None

    def disconnected(self, code: int) -> tuple[int | None, str]:
        """The client (or the network) closed the socket; returns what the row records (the
        server's own close, if that came first)."""
        self.phase = Phase.CLOSED
        if self.ended is None:
            self.ended = (code, "client_closed" if code in (1000, 1001) else "connection_lost")
        return self.ended

    def admit(self, remote_addr: str) -> list[Action]:
        """The socket is open: a client address is held to its connect rate (no address, as
        in-process, no limit)."""
        if self.closed or not remote_addr:
            return []
        return [CheckLimit("ip", f"ip:{remote_addr}")]

    def limit_checked(self, check: CheckLimit, allowed: bool, retry_after_ms: int) -> list[Action]:
        """The answer to a `CheckLimit`: a refused connect rate closes the socket."""
        if allowed:
            return []
        return self.limited(check.kind, retry_after_ms)

    # --- inputs: the connect, step by step ------------------------------------------------------

    def token_refused(self, detail: str, expired: bool) -> list[Action]:
        reason = closes.TOKEN_EXPIRED if expired else closes.UNAUTHENTICATED
        return self._close(reason, f"access token refused: {detail}")

    def identified(self, access_expires_at: int) -> None:
        self.access_expires_at = access_expires_at

    def limited(self, kind: str, retry_after_ms: int) -> list[Action]:
        """A connection limit (per user, per IP, concurrent slots) refused the socket."""
        return self._close(closes.RATE_LIMITED, LIMIT_DETAILS[kind], retry_after_ms=retry_after_ms)

    def connect_failed(self, code: str, detail: str) -> list[Action]:
        """A refusal by the services (by error code), or a failure: "unavailable" (database or
        Redis), "feed_unavailable" (the live feed cannot be joined). Both of those tell the
        client to resume after a pause; nothing was lost."""
        reason = closes.CONNECT_REFUSALS.get(code)
        if reason is not None:
            return self._close(reason, detail)
        return self._close(closes.GOING_AWAY, detail, retry_after_ms=self.limits.unavailable_retry_ms)

    def opened(
        self,
        *,
        conversation_id: str,
        client_last_seq: int | None,
        last_seq: int,
        first_kept_seq: int,
        created: bool,
        intact: bool,
        node: str,
        frames: list[tuple[int, str]] = (),
    ) -> list[Action]:
        """The session is open: `ready`, then the sender replays from where the client is
        (`frames`: the first of the log's frames after the client's last_seq, read with the
        session; used only if the plan resumes from there)."""
        if self.closed:
            return []
        plan = p.plan_resume(client_last_seq, last_seq, first_kept_seq, created, intact=intact)
        self.phase = Phase.READY
        self.sent_seq = plan.replay_from
        self.known_upto = max(self.known_upto, last_seq)
        self.pending = {s: e for s, e in self.pending.items() if s > self.sent_seq}
        ready = self._ready_frame(conversation_id, plan, last_seq, node)
        if frames and plan.resumed and frames[0][0] == self.sent_seq + 1:
            return [ready, *self.log_read(ReadLog(self.sent_seq, last_seq, len(frames)), frames)]
        return [ready]

    def _ready_frame(self, conversation_id: str, plan: p.ResumePlan, last_seq: int, node: str) -> Send:
        return Send({
            "type": "ready",
            "conversation_id": conversation_id,
            "resumed": plan.resumed,
            "last_seq": last_seq,
            "replay_count": plan.replay_count,
            "heartbeat_interval_ms": self.limits.heartbeat_interval_ms,
            "access_expires_at": self.access_expires_at,
            "node": node,
        })

    # --- inputs: outcomes of the frames' service calls -----------------------------------------

    def message_posted(self, client_msg_id: str, seq: int, duplicate: bool) -> list[Action]:
        return [Send({"type": "message.ack", "client_msg_id": client_msg_id, "seq": seq, "duplicate": duplicate})]

    def message_limited(self, client_msg_id: str, retry_after_ms: int, per_user: bool = False) -> list[Action]:
        """Messages per conversation, or agent runs started per user: the socket stays open and
        the client resends the same message after `retry_after_ms`."""
        detail = "too many agent runs started by this user" if per_user else "too many messages in this conversation"
        return [Send(p.error_frame("rate_limited", detail, client_msg_id, retry_after_ms=retry_after_ms))]

    def limit_unchecked(self, ref: Any) -> list[Action]:
        """A limit that fails closed could not be checked (Redis unreachable or overloaded): the
        frame was not processed; the client sends it again after `retry_after_ms`."""
        return [Send(p.error_frame("unavailable", "the rate limit cannot be checked now; retry", ref,
                                   retry_after_ms=self.limits.unavailable_retry_ms))]

    def conversation_gone(self) -> list[Action]:
        """The conversation was deleted while the socket was open."""
        return self._close(closes.NOT_FOUND, "this conversation no longer exists")

    def cancel_unknown(self, run_id: str) -> list[Action]:
        return [Send(p.error_frame("not_found", "no such run in this conversation", run_id))]

    def approval_answered(self, call_id: str, outcome: str, decision: str | None) -> list[Action]:
        """What `approval.respond` found: the decision taken (every socket of the conversation
        then gets `approval.resolved`: no answer here), no such call waiting for an approval in
        this conversation, or one decided already (with the decision that stands)."""
        if outcome == "not_found":
            return [Send(p.error_frame("not_found", "no approval for this call in this conversation", call_id))]
        if outcome == "already_decided":
            return [Send(p.error_frame("already_decided", f"this call was already {decision}", call_id,
                                       decision=decision))]
        return []

    def refreshed(self, access_expires_at: int, access: str | None = None, refresh: str | None = None) -> list[Action]:
        if self.closed:
            return []
        self.access_expires_at = access_expires_at
        self.expiry_warned = False
        reply: dict[str, Any] = {"type": "auth.refreshed", "access_expires_at": access_expires_at}
        if access is not None:
            reply["access"] = access
            reply["refresh"] = refresh
        return [Send(reply)]

    def refresh_refused(self, detail: str) -> list[Action]:
        # The socket keeps its current expiry: a failed renewal is not a reason to drop it.
        return [Send(p.error_frame("refresh_failed", detail))]

    def handler_failed(self, ref: Any, transient: bool) -> list[Action]:
        """A frame's service call failed. Transient (database or Redis unavailable): retry the
        same frame after `retry_after_ms` (messages are idempotent by client_msg_id). Otherwise
        a server bug, logged by the consumer; the socket stays up either way."""
        if transient:
            return [Send(p.error_frame("unavailable", "temporarily unavailable; retry", ref,
                                       retry_after_ms=self.limits.unavailable_retry_ms))]
        return [Send(p.error_frame("server_error", "the server failed to handle this frame", ref,
                                   retry_after_ms=self.limits.unavailable_retry_ms))]

    # --- inputs: the clock ---------------------------------------------------------------------

    def tick(self, now: float, wall: float) -> tuple[list[Action], float | None]:
        """Acts on every deadline that passed; returns the actions and the next deadline
        (loop time), None once closed."""
        if self.closed:
            return [], None
        if self.phase is Phase.AWAITING_CONNECT:
            deadline = self.opened_at + self.limits.connect_timeout
            if now >= deadline:
                return self._close(closes.UNAUTHENTICATED,
                                   f"no 'connect' frame within {self.limits.connect_timeout:g} s"), None
            return [], deadline
        heartbeat_deadline = self.last_frame_at + self.limits.heartbeat_timeout
        if now >= heartbeat_deadline:
            return self._close(closes.HEARTBEAT_TIMEOUT, f"no frame for {self.limits.heartbeat_timeout:g} s"), None
        if not self.access_expires_at:  # CONNECTING, token not verified yet
            return [], heartbeat_deadline
        expires_in = self.access_expires_at - wall
        if expires_in <= 0:
            return self._close(closes.TOKEN_EXPIRED, "access token expired; refresh it"), None
        actions: list[Action] = []
        warn_in = expires_in - self.limits.token_warning
        if warn_in <= 0 and not self.expiry_warned and self.phase is Phase.READY:
            self.expiry_warned = True
            actions.append(Send({"type": "auth.expiring", "access_expires_at": self.access_expires_at}))
        token_deadline = now + (expires_in if self.expiry_warned or self.phase is not Phase.READY else max(warn_in, 0))
        return actions, min(heartbeat_deadline, token_deadline)

    # --- inputs: the node (live feed, resync, drain, replacement) -------------------------------

    def live(self, message: dict) -> bool:
        """Committed events announced by the fan-out: their wire frames, or only their highest
        seq (realtime.fanout.publish.layer_message). True when the sender has something new to do."""
        if self.closed:
            return False
        upto = message["upto"]
        frames = message.get("frames")
        if frames:
            for seq, text in frames:
                if seq > self.sent_seq and len(self.pending) < self.limits.inline_events:
                    self.pending.setdefault(seq, text)
        if upto > self.known_upto:
            self.known_upto = upto
            return True
        return bool(frames)

    def lost_live_feed(self) -> bool:
        """The fan-out lost messages (Redis reconnected): whatever was published meanwhile is in
        the log only."""
        if self.closed:
            return False
        self.to_log_end = True
        return True

    def resync_entry(self) -> tuple[int, int] | None:
        """(delivered seq, acked seq) for the node's periodic resync; None unless READY."""
        return (self.sent_seq, self.acked_seq) if self.phase is Phase.READY else None

    def resynced(self, state: str, last_seq: int, acked_stored: int) -> list[Action]:
        """What the resync found: the row closed by someone else (replaced, reaped), a
        deactivated user, a revoked token, or events the live feed dropped."""
        if self.phase is not Phase.READY:
            return []
        close = RESYNC_CLOSES.get(state)
        if close is not None:
            return self._close(close.reason, close.detail)
        self.acked_written = max(self.acked_written, acked_stored)
        self.known_upto = max(self.known_upto, last_seq)
        return []

    def terminate(self, reason: CloseReason, detail: str, **extra: Any) -> list[Action]:
        """An ending decided outside the socket: the node drains."""
        return self._close(reason, detail, **extra)

    def control(self, action: str) -> list[Action] | None:
        """A control message of the fan-out for this socket (another socket replaced it, an
        operator disconnected it); None for an action this node does not know (a newer node's)."""
        close = CONTROL_CLOSES.get(action)
        if close is None:
            return None
        return self._close(close.reason, close.detail)

    def failed(self, detail: str) -> list[Action]:
        """Something in the consumer failed unexpectedly: the client resumes elsewhere."""
        return self._close(closes.GOING_AWAY, detail, retry_after_ms=self.limits.unavailable_retry_ms)

    # --- the sender -----------------------------------------------------------------------------

    def next_delivery(self) -> ReadLog | Deliver | None:
        """The sender's next step: events in hand that follow the cursor, else a read of the
        log, else nothing (wait for news)."""
        if self.phase is not Phase.READY:
            return None
        run: list[tuple[int, str]] = []
        seq = self.sent_seq + 1
        while seq in self.pending and len(run) < self.limits.replay_batch:
            run.append((seq, self.pending[seq]))
            seq += 1
        if run:
            return Deliver(run)
        if self.sent_seq < self.known_upto:
            # Up to the first event already in hand: the log need not be read twice.
            upto = min(self.known_upto, min(self.pending) - 1) if self.pending else self.known_upto
            return ReadLog(self.sent_seq, upto, self.limits.replay_batch)
        if self.to_log_end:
            return ReadLog(self.sent_seq, None, self.limits.replay_batch)
        return None

    def read_ahead(self) -> ReadLog | None:
        """While the frames in hand are sent, the read of what follows them, if the log has more:
        a long replay then reads and sends at the same time instead of in turns."""
        if self.phase is not Phase.READY:
            return None
        last = self.sent_seq
        while last + 1 in self.pending:
            last += 1
        if last >= self.known_upto or last == self.sent_seq:
            return None
        upto = self.known_upto
        later = [s for s in self.pending if s > last + 1]
        if later:
            upto = min(upto, min(later) - 1)
        return ReadLog(last, upto, self.limits.replay_batch)

    def log_read(self, step: ReadLog, batch: list[tuple[int, str]]) -> list[Action]:
        """Rows of the log for `step`. They must follow the cursor without a hole: the log is
        gapless by construction, so a hole means it was damaged (or pruned under a replay).
        The client cannot be served honestly from here: it resumes, and the resume answers
        `resumed:false` (reload over REST)."""
        if self.closed:
            return []
        expected = step.after + 1
        for seq, text in batch:
            if seq != expected:
                return self._close(closes.GOING_AWAY, f"the event log has no seq {expected}; resume")
            self.pending.setdefault(seq, text)
            expected += 1
        if step.upto is None:
            if len(batch) < step.limit:
                self.to_log_end = False
            if batch:
                self.known_upto = max(self.known_upto, batch[-1][0])
        elif not batch and step.after < step.upto:
            return self._close(closes.GOING_AWAY, f"the event log has no seq {expected}; resume")
        return []

    def may_send(self, unsent_bytes: int, now: float) -> bool | list[Action]:
        """Asked by the sender before each event, with what the transport still holds unsent:
        True (send), False (wait and ask again), or the close of a client that stopped reading
        (its backlog stayed over the bound for `send_stall_timeout`)."""
        if unsent_bytes <= self.limits.max_unsent_bytes:
            self.stalled_since = None
            return True
        if self.stalled_since is None:
            self.stalled_since = now
        if now - self.stalled_since >= self.limits.send_stall_timeout:
            stalled = self.limits.send_stall_timeout
            return self._close(closes.SLOW_CONSUMER, f"the client read nothing for {stalled:g} s")
        return False

    def delivered(self, seq: int) -> None:
        """The events of a `Deliver` up to `seq` were handed to the socket."""
        for s in range(self.sent_seq + 1, seq + 1):
            self.pending.pop(s, None)
        self.sent_seq = max(self.sent_seq, seq)

    # --- closing -------------------------------------------------------------------------------

    def _close(self, reason: CloseReason, detail: str, **extra: Any) -> list[Action]:
        if self.closed:
            return []
        self.phase = Phase.CLOSED
        self.close = Close(reason, detail, extra)
        self.ended = (reason.close_code, reason.code)
        self.pending = {}
        return [self.close]
