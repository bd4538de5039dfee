"""``TetherClient``: one resumable conversation over protocol v1.

One background task owns the connection: it opens a socket, sends `connect`, waits for
`ready`, resends the outbox, then reads frames until the socket is lost, and decides with
``close_rules.decide`` whether and when to connect again (rotating through the endpoints and
refreshing them from the discovery URL when every one failed). The application reads
``events()`` and calls ``send()``; neither ever sees a duplicate or a hole in the seq order.

Why ~800 lines in one module: this is the I/O shell around the SDK's pure modules (close rules,
backoff, outbox, state, frames), and its connection loop, token renewal, heartbeat and
discovery share one socket and one task; the decisions themselves live in those pure modules
and are tested there.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from tether_client import rest
from tether_client.backoff import Backoff
from tether_client.close_rules import Action, Decision, decide
from tether_client.errors import AuthError, MessageRejected, TetherClosed, TetherError
from tether_client.events import (
    Connected,
    Connecting,
    Disconnected,
    Event,
    MessageAcked,
    MessageRefused,
    Reconnecting,
    ReloadRequired,
    SequencedEventType,
    ServerError,
    is_sequenced,
    parse_event,
)
from tether_client.frames import (
    ack_frame,
    approval_respond_frame,
    cancel_frame,
    connect_frame,
    ping_frame,
    refresh_with_access_frame,
    refresh_with_token_frame,
)
from tether_client.outbox import Outbox, PendingMessage
from tether_client.oversize import SentFrames, frame_size
from tether_client.state import Arrival, ResumeState

log = logging.getLogger("tether_client")

TokenProvider = Callable[[], Awaitable[str] | str]

DEFAULT_HEARTBEAT_INTERVAL = 25.0  # until `ready` says otherwise (protocol default 25000 ms)
_IMMEDIATE_RETRY_LIMIT = 3  # back-to-back immediate retries before backing off anyway
_REFRESH_MARGIN = 5.0  # renew a token this many seconds before it expires, when reconnecting
_REJECTED_CODES = frozenset({"too_long", "bad_frame"})
# Refusals of a message that pass: resend the same message after `retry_after_ms`.
_RETRY_CODES = frozenset({"rate_limited", "unavailable", "server_error"})
# A `server_error` is a server bug: resend a message this many times at most, then report it.
_SERVER_ERROR_RETRIES = 3


class _End:
    """Sentinel closing the event stream."""


_END = _End()


@dataclass
class _SessionEnd:
    """How one socket (or one attempt to open one) ended."""

    code: int | None
    reason: str
    error: dict[str, Any] | None = None  # the error frame received just before the close
    reconnect: dict[str, Any] | None = None  # a `reconnect` frame received on this socket
    ready_seen: bool = False
    lived: float = 0.0  # seconds between `ready` and the loss
    local: Decision | None = None  # the client's own verdict (no close code applies)
    lost_at: float = field(default_factory=time.monotonic)
    sent: SentFrames | None = None  # what was sent on the socket: a "frame too large" names no frame


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class TetherClient:
    """An async client of one Tether conversation.

    Use as ``async with TetherClient(...) as client:`` (or call ``start()`` / ``close()``),
    read ``async for event in client.events()`` and send with ``await client.send(text)``.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str | None = None,
        *,
        discovery_url: str | None = None,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        refresh_token: str | None = None,
        conversation_id: str | None = None,
        last_seq: int | None = None,
        client_id: str | None = None,
        backoff: Backoff | None = None,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float | None = None,
        ack_every: int | None = 20,
        ack_interval: float = 1.0,
        open_timeout: float = 10.0,
        ready_timeout: float = 10.0,
        http_base_url: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        max_message_bytes: int | None = None,
        max_auth_failures: int = 2,
        stable_after: float = 2.0,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        self._endpoints: list[str] = list(endpoints or [])
        if not self._endpoints and discovery_url is None:
            raise ValueError("give endpoints, a discovery_url, or both")
        if token is None and token_provider is None:
            raise ValueError("give a token or a token_provider")
        if ack_every is not None and ack_every < 1:
            raise ValueError("ack_every must be >= 1 or None (no acks)")
        self._discovery_url = discovery_url
        self._token = token
        self._token_provider = token_provider
        self._refresh_token = refresh_token
        self._pending_access: str | None = None
        self._refreshing = False  # an `auth.refresh` is in flight on the current socket
        self._server_errors: dict[str, int] = {}  # `server_error` answers per pending message
        self._access_expires_at: float | None = None
        self.client_id = client_id or str(uuid.uuid4())
        self._backoff = backoff or Backoff()
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        self._ack_every = ack_every
        self._ack_interval = ack_interval
        self._open_timeout = open_timeout
        self._ready_timeout = ready_timeout
        self._http_base_url = http_base_url.rstrip("/") if http_base_url else None
        self._http = http_client
        self._own_http = http_client is None
        self._max_message_bytes = max_message_bytes
        self._max_auth_failures = max_auth_failures
        self._stable_after = stable_after

        self._state = ResumeState(conversation_id, last_seq)
        self._outbox = Outbox()
        self._ack_waiters: dict[str, asyncio.Future[MessageAcked]] = {}
        self._queue: asyncio.Queue[Event | _End] = asyncio.Queue()
        self._send_lock = asyncio.Lock()
        self._closing = asyncio.Event()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._ready_ws: ClientConnection | None = None
        self._sent = SentFrames()  # frames sent on ``_ws``
        self._stopped = False
        self.error: TetherError | None = None

        self._endpoint_index = 0
        self._failures_in_cycle = 0  # failed endpoints since the last `ready` or discovery
        self._attempt = 0  # retries since the last `ready`
        self._immediate_streak = 0
        self._auth_failures = 0
        self._lost_at: float | None = None
        self._last_sent = time.monotonic()
        self._last_applied_at = time.monotonic()
        self._ping_id = 0
        self._session_tasks: set[asyncio.Task[Any]] = set()

        self.resume_latencies: list[float] = []  # seconds from a lost socket to the next `ready`
        self.node: str | None = None
        self.endpoint: str | None = None

    # --- public API -------------------------------------------------------------------

    async def __aenter__(self) -> TetherClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        """Starts the connection task (``events()``, ``send()`` and ``async with`` do it too)."""
        if self._task is None and not self._stopped:
            self._task = asyncio.create_task(self._run(), name=f"tether-client-{self.client_id}")

    async def events(self) -> AsyncIterator[Event]:
        """Every event once, sequenced ones in seq order; ends after ``Disconnected(final=True)``.
        Meant for one consumer."""
        self.start()
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                self._queue.put_nowait(item)  # later iterators end at once too
                return
            yield item

    async def send(self, text: str, *, client_msg_id: str | None = None) -> str:
        """Queues a user message and sends it when connected; returns its ``client_msg_id``.
        It is resent with the same id after every reconnect until a `message.ack` arrives."""
        if not isinstance(text, str) or not text:
            raise ValueError("text must be a non-empty string")
        if self._stopped or self._closing.is_set():
            raise self._closed_error()
        self.start()
        async with self._send_lock:
            item = self._outbox.add(text, client_msg_id)
            future: asyncio.Future[MessageAcked] = asyncio.get_running_loop().create_future()
            future.add_done_callback(_consume_exception)
            self._ack_waiters[item.client_msg_id] = future
            ws = self._ready_ws
            if ws is not None:
                await self._transmit(ws, item.frame())
        return item.client_msg_id

    async def wait_acked(self, client_msg_id: str, timeout: float | None = None) -> MessageAcked:
        """Waits for the `message.ack` of a message sent with ``send()`` (``duplicate`` or not).
        Raises ``MessageRejected`` if the server refused it, ``TetherClosed`` if the client stopped."""
        future = self._ack_waiters.get(client_msg_id)
        if future is None:
            raise KeyError(f"unknown client_msg_id {client_msg_id}")
        async with asyncio.timeout(timeout):
            return await asyncio.shield(future)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Waits until a socket is past `ready` (raises if the client stops first)."""
        self.start()
        async with asyncio.timeout(timeout):
            while not self._connected.is_set():
                if self._stopped:
                    raise self._closed_error()
                waiters = [asyncio.ensure_future(self._connected.wait()), asyncio.ensure_future(self._closing.wait())]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                if self._closing.is_set() and not self._connected.is_set():
                    raise self._closed_error()

    async def cancel(self, run_id: str) -> bool:
        """Asks the server to stop a running agent reply; False when not connected."""
        ws = self._ready_ws
        return ws is not None and await self._send_frame(ws, cancel_frame(run_id))

    async def respond_approval(self, call_id: str, decision: str) -> bool:
        """Answers an `approval.requested` (``decision``: ``"approve"`` or ``"deny"``); False
        when not connected (the approval waits until it expires: answer again once connected).
        No direct answer: every socket of the conversation gets `approval.resolved`
        (``ApprovalResolved``) when it is decided. If it cannot be, a ``ServerError`` says why
        and the socket stays open: ``already_decided`` (``decision``: the one that stands; the
        first decision wins, from any device) or ``not_found``; ``ref`` is the ``call_id``."""
        frame = approval_respond_frame(call_id, decision)  # a wrong decision raises ValueError now
        ws = self._ready_ws
        return ws is not None and await self._send_frame(ws, frame)

    async def approve(self, call_id: str) -> bool:
        """``respond_approval(call_id, "approve")``: the call is made, the run continues."""
        return await self.respond_approval(call_id, "approve")

    async def deny(self, call_id: str) -> bool:
        """``respond_approval(call_id, "deny")``: the call is never made (its result is `denied`)."""
        return await self.respond_approval(call_id, "deny")

    async def fetch_messages(self) -> list[dict[str, Any]]:
        """The conversation's messages over REST, oldest first (the reload after ``ReloadRequired``)."""
        if self.conversation_id is None:
            return []
        token = await self._current_token()
        return await rest.fetch_messages(self._http_client(), self._http_base(), token or "", self.conversation_id)

    async def fetch_events(self, after_seq: int = 0) -> list[SequencedEventType]:
        """The kept sequenced events after ``after_seq`` over REST, typed, in order."""
        if self.conversation_id is None:
            return []
        token = await self._current_token()
        frames = await rest.fetch_events(
            self._http_client(), self._http_base(), token or "", self.conversation_id, after_seq
        )
        return [parse_event(frame) for frame in frames]

    async def close(self) -> None:
        """Acks what was applied, closes the socket (1000) and ends ``events()``."""
        if self._task is not None and not self._closing.is_set():
            self._closing.set()
            ws = self._ws
            if ws is not None:
                if ws is self._ready_ws and self._ack_every is not None and self._state.ack_pending():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._send_ack(ws), 1.0)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(1000, "client closed"), 2.0)
            if not self._task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(self._task), 2.0)
                except TimeoutError:
                    self._task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._task
        self._closing.set()
        self._stop(None, Disconnected(1000, "closed by client", final=True))
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def conversation_id(self) -> str | None:
        return self._state.conversation_id

    @property
    def last_seq(self) -> int | None:
        """Highest seq applied; persist it with ``conversation_id`` to resume in a new process."""
        return self._state.last_seq

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def closed(self) -> bool:
        return self._stopped

    @property
    def pending_messages(self) -> list[PendingMessage]:
        """Messages not yet acknowledged by the server, in send order."""
        return self._outbox.pending()

    @property
    def access_token(self) -> str | None:
        return self._token

    @property
    def refresh_token(self) -> str | None:
        return self._refresh_token

    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    # --- the connection task ----------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._closing.is_set():
                endpoint = await self._choose_endpoint()
                if endpoint is None:
                    end = _SessionEnd(None, "no endpoint available", local=Decision(Action.BACKOFF, "no endpoint"))
                else:
                    self._emit(Connecting(endpoint, self._attempt))
                    end = await self._attempt_connection(endpoint)
                if self._closing.is_set() or not await self._after_end(end):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave the consumer waiting forever
            log.exception("tether client task failed")
            self._stop(TetherError(f"client failed: {exc!r}"), Disconnected(None, f"client failed: {exc!r}", True))

    async def _after_end(self, end: _SessionEnd) -> bool:
        """Applies the close rules to a lost socket / failed attempt; False: stop."""
        if self._lost_at is None and end.ready_seen:
            self._lost_at = end.lost_at  # an outage starts when a ready socket is lost
        if end.ready_seen and end.lived >= self._stable_after:
            self._immediate_streak = 0
        decision = end.local or decide(end.code, error=end.error, reconnect=end.reconnect is not None)
        error_code = str(end.error.get("code")) if end.error and end.error.get("code") else None
        log.info("socket ended: %s -> %s", end.reason, decision)

        if decision.action is Action.DROP_MESSAGE:
            # A resend of the refused frame would be refused again, forever (oversize.py).
            culprit = end.sent.culprit(self._outbox) if end.sent is not None else None
            if culprit is None:
                decision = Decision(Action.STOP, f"{decision.reason}; no pending message was that large")
            else:
                self._refuse_message(culprit, "frame_too_large", end.code)
                decision = Decision(Action.RETRY_NOW, f"{decision.reason}; message {culprit} dropped")

        if decision.action is Action.REFRESH_TOKEN:
            self._auth_failures += 1
            if self._auth_failures > self._max_auth_failures or not await self._renew_token():
                reason = f"{decision.reason}; no fresh token"
                self._stop(AuthError(reason, end.code, error_code), Disconnected(end.code, reason, True, error_code))
                return False
        if decision.action is Action.STOP:
            self._stop(
                TetherError(decision.reason, end.code, error_code),
                Disconnected(end.code, decision.reason, True, error_code),
            )
            return False
        if not self._backoff.allows(self._attempt):
            reason = f"{decision.reason}; gave up after {self._attempt} attempts"
            self._stop(TetherError(reason, end.code, error_code), Disconnected(end.code, reason, True, error_code))
            return False
        if end.ready_seen:
            self._emit(Disconnected(end.code, decision.reason, False, error_code))

        first = self._attempt == 0
        if decision.action is Action.RETRY_NOW and first and self._immediate_streak < _IMMEDIATE_RETRY_LIMIT:
            delay = 0.0
            self._immediate_streak += 1
        elif decision.action is Action.RETRY_AFTER:
            delay = decision.delay_ms / 1000
        elif decision.action is Action.REFRESH_TOKEN and first:
            delay = 0.0
        else:
            delay = self._backoff.delay(self._attempt)
        self._attempt += 1
        if decision.rotate or not end.ready_seen:
            self._rotate()
        self._emit(Reconnecting(self._attempt, delay, decision.reason))
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)
        return not self._closing.is_set()

    async def _attempt_connection(self, endpoint: str) -> _SessionEnd:
        try:
            token = await self._current_token()
        except Exception as exc:  # noqa: BLE001 - a failing provider is retried with backoff
            return _SessionEnd(None, f"token provider failed: {exc!r}", local=Decision(Action.BACKOFF, "token"))
        if not token:
            return _SessionEnd(None, "no access token", local=Decision(Action.REFRESH_TOKEN, "no access token"))
        try:
            ws = await ws_connect(
                endpoint,
                open_timeout=self._open_timeout,
                close_timeout=1.0,
                max_size=self._max_message_bytes,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - refused, DNS, TLS, HTTP status, timeout...
            reason = f"connect to {endpoint} failed: {exc!r}"
            return _SessionEnd(None, reason, local=Decision(Action.BACKOFF, reason, rotate=True))
        self._ws = ws
        self._sent = SentFrames()
        try:
            end = await self._session(ws, endpoint, token)
            end.sent = self._sent
            return end
        finally:
            self._ws = None
            self._ready_ws = None
            self._refreshing = False
            self._connected.clear()
            for task in self._session_tasks:
                task.cancel()
            self._session_tasks.clear()
            if ws.close_code is None:  # we gave up on it: do not wait for a closing handshake
                ws.transport.abort()

    async def _session(self, ws: ClientConnection, endpoint: str, token: str) -> _SessionEnd:
        sent_conversation, sent_last_seq = self._state.conversation_id, self._state.last_seq
        last_error: dict[str, Any] | None = None
        reconnect: dict[str, Any] | None = None
        try:
            await self._transmit(ws, connect_frame(token, sent_conversation, sent_last_seq, self.client_id),
                                 raise_closed=True)
            async with asyncio.timeout(self._ready_timeout):
                while True:
                    frame = _decode(await ws.recv())
                    kind = frame.get("type") if frame else None
                    if kind == "ready":
                        break
                    if kind == "error":
                        last_error = frame
                    elif kind == "reconnect":
                        reconnect = frame
        except TimeoutError:
            reason = f"no 'ready' within {self._ready_timeout:g} s"
            return _SessionEnd(None, reason, last_error, reconnect, local=Decision(Action.BACKOFF, reason, rotate=True))
        except ConnectionClosed as exc:
            return _SessionEnd(_close_code(exc), str(exc), last_error, reconnect)

        assert frame is not None
        ready_at = time.monotonic()
        outcome = self._state.on_ready(frame, sent_conversation, sent_last_seq)
        self._attempt = 0
        self._auth_failures = 0
        self._failures_in_cycle = 0
        self.node = frame.get("node")
        self.endpoint = endpoint
        if isinstance(frame.get("access_expires_at"), (int, float)):
            self._access_expires_at = float(frame["access_expires_at"])
        interval = self._heartbeat_interval or (frame.get("heartbeat_interval_ms") or 0) / 1000 or (
            DEFAULT_HEARTBEAT_INTERVAL
        )
        timeout = self._heartbeat_timeout or 2 * interval
        if self._lost_at is not None:
            self.resume_latencies.append(ready_at - self._lost_at)
            self._lost_at = None
        self._emit(
            Connected(
                resumed=outcome.resumed,
                conversation_id=outcome.conversation_id,
                endpoint=endpoint,
                node=self.node,
                server_last_seq=outcome.server_last_seq,
                replay_count=outcome.replay_count,
            )
        )
        if outcome.reload_required:
            self._emit(ReloadRequired(outcome.conversation_id, outcome.reload_after_seq, outcome.server_last_seq))
        async with self._send_lock:
            for message in self._outbox.resend_frames():
                if not await self._transmit(ws, message):
                    break
            self._ready_ws = ws
        self._connected.set()
        self._spawn(self._heartbeat(ws, interval))

        def lost(reason: str, decision: Decision | None = None, code: int | None = None) -> _SessionEnd:
            return _SessionEnd(
                code, reason, last_error, reconnect, ready_seen=True, lived=time.monotonic() - ready_at, local=decision
            )

        try:
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        raw = await ws.recv()
                except TimeoutError:
                    reason = f"no frame from the server for {timeout:g} s"
                    return lost(reason, Decision(Action.BACKOFF, reason, rotate=True))
                frame = _decode(raw)
                if frame is None:
                    continue
                kind = frame.get("type")
                if kind != "error":
                    last_error = None  # only an error right before the close explains it
                if is_sequenced(frame):
                    seq = frame["seq"]
                    arrival = self._state.classify(seq)
                    if arrival is Arrival.DUPLICATE:
                        continue
                    if arrival is Arrival.GAP:
                        reason = f"gap: seq {seq} after {self._state.last_seq}"
                        return lost(reason, Decision(Action.RETRY_NOW, reason))
                    self._state.apply(seq)
                    self._last_applied_at = time.monotonic()
                    self._emit(parse_event(frame))
                    if self._ack_every is not None and self._state.unacked_count() >= self._ack_every:
                        await self._send_ack(ws)
                elif kind == "message.ack":
                    self._on_message_ack(frame)
                elif kind == "error":
                    last_error = frame
                    self._on_error(ws, frame)
                elif kind == "reconnect":
                    reconnect = frame
                elif kind == "auth.expiring":
                    if isinstance(frame.get("access_expires_at"), (int, float)):
                        self._access_expires_at = float(frame["access_expires_at"])
                    if not self._refreshing:
                        self._refreshing = True
                        self._spawn(self._refresh_on_socket(ws))
                elif kind == "auth.refreshed":
                    self._on_refreshed(frame)
                # pong and unknown frame types: the arrival itself proves the server is alive
        except ConnectionClosed as exc:
            return lost(str(exc), code=_close_code(exc))

    # --- frames in --------------------------------------------------------------------

    def _on_message_ack(self, frame: Mapping[str, Any]) -> None:
        msg_id = str(frame.get("client_msg_id"))
        ack = MessageAcked(msg_id, int(frame.get("seq") or 0), bool(frame.get("duplicate", False)))
        self._outbox.ack(msg_id)
        future = self._ack_waiters.get(msg_id)
        if future is not None and not future.done():
            future.set_result(ack)
        self._emit(ack)

    def _on_error(self, ws: ClientConnection, frame: Mapping[str, Any]) -> None:
        code = str(frame.get("code", ""))
        ref = frame.get("ref")
        retry_after = frame.get("retry_after_ms")
        retry_after_ms = int(retry_after) if isinstance(retry_after, (int, float)) else None
        decision = frame.get("decision")  # `already_decided`: the decision that stands
        self._emit(ServerError(code, str(frame.get("detail", "")), ref, retry_after_ms,
                               None if decision is None else str(decision)))
        if code == "refresh_failed":
            self._refreshing = False
            self._pending_access = None
        elif code in ("unavailable", "server_error") and ref is None and self._refreshing:
            # The `auth.refresh` could not be handled now: the same renewal, a little later.
            self._pending_access = None
            self._spawn(self._refresh_later(ws, (retry_after_ms or 1000) / 1000))
        if not isinstance(ref, str) or ref not in self._outbox:
            return
        if code in _REJECTED_CODES:
            self._refuse_message(ref, code, None)
        elif code in _RETRY_CODES:
            if code == "server_error":
                self._server_errors[ref] = self._server_errors.get(ref, 0) + 1
                if self._server_errors[ref] > _SERVER_ERROR_RETRIES:
                    self._refuse_message(ref, code, None)
                    return
            self._spawn(self._resend_later(ws, ref, (retry_after_ms or 1000) / 1000))

    def _refuse_message(self, client_msg_id: str, error_code: str, close_code: int | None) -> None:
        """The server refused a message for good: out of the outbox (never resent), its
        ``wait_acked`` raises ``MessageRejected``, the application gets ``MessageRefused``."""
        item = self._outbox.discard(client_msg_id)
        if item is None:
            return
        future = self._ack_waiters.get(client_msg_id)
        if future is not None and not future.done():
            future.set_exception(
                MessageRejected(f"message refused: {error_code}", code=close_code, error_code=error_code)
            )
        self._emit(MessageRefused(client_msg_id, item.text, error_code, close_code))

    def _on_refreshed(self, frame: Mapping[str, Any]) -> None:
        if frame.get("access"):
            self._token = str(frame["access"])
            if frame.get("refresh"):
                self._refresh_token = str(frame["refresh"])
        elif self._pending_access is not None:
            self._token = self._pending_access
        self._pending_access = None
        self._refreshing = False
        if isinstance(frame.get("access_expires_at"), (int, float)):
            self._access_expires_at = float(frame["access_expires_at"])

    # --- frames out -------------------------------------------------------------------

    async def _transmit(self, ws: ClientConnection, frame: Mapping[str, Any], *, raise_closed: bool = False) -> bool:
        """Sends one frame; False if the socket is gone (the read loop notices and resumes)."""
        text = json.dumps(frame)
        if ws is self._ws:
            # Before sending: a server may refuse a frame while it is still being sent.
            self._sent.record(frame, frame_size(text))
        try:
            await ws.send(text)
        except ConnectionClosed:
            if raise_closed:
                raise
            return False
        self._last_sent = time.monotonic()
        return True

    async def _send_frame(self, ws: ClientConnection, frame: Mapping[str, Any]) -> bool:
        async with self._send_lock:
            return await self._transmit(ws, frame)

    async def _send_ack(self, ws: ClientConnection) -> bool:
        seq = self._state.last_seq or 0
        if not await self._send_frame(ws, ack_frame(seq)):
            return False
        self._state.mark_acked(seq)
        return True

    async def _heartbeat(self, ws: ClientConnection, interval: float) -> None:
        """A frame at least every ``interval``: a pending cumulative ack, else a ping."""
        while True:
            now = time.monotonic()
            acking = self._ack_every is not None and self._state.ack_pending()
            wake = self._last_sent + interval
            if acking:
                wake = min(wake, self._last_applied_at + self._ack_interval)
            if wake > now:
                await asyncio.sleep(wake - now)
                continue
            if acking:
                ok = await self._send_ack(ws)
            else:
                self._ping_id += 1
                ok = await self._send_frame(ws, ping_frame(self._ping_id))
            if not ok:
                return

    async def _resend_later(self, ws: ClientConnection, client_msg_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._send_lock:
            item = self._outbox.get(client_msg_id)
            if item is not None and self._ready_ws is ws:
                await self._transmit(ws, item.frame())

    async def _refresh_later(self, ws: ClientConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._ready_ws is ws:
            await self._refresh_on_socket(ws)
        else:
            self._refreshing = False

    async def _refresh_on_socket(self, ws: ClientConnection) -> None:
        """`auth.expiring`: renew over the open socket (a new access token, else the refresh
        token). ``_refreshing`` stays set until `auth.refreshed` or `refresh_failed` answers."""
        try:
            if self._token_provider is not None:
                access = await self._call_provider()
                self._pending_access = access
                sent = await self._send_frame(ws, refresh_with_access_frame(access))
            elif self._refresh_token is not None:
                sent = await self._send_frame(ws, refresh_with_token_frame(self._refresh_token))
            else:
                log.warning("access token expiring and no way to renew it; the server will close with 4401")
                sent = False
        except Exception:  # at expiry the server closes 4401 and we renew then
            log.warning("token refresh on the open socket failed", exc_info=True)
            sent = False
        if not sent:
            self._refreshing = False

    # --- tokens, endpoints, HTTP ------------------------------------------------------

    async def _call_provider(self) -> str:
        assert self._token_provider is not None
        value = self._token_provider()
        if inspect.isawaitable(value):
            value = await value
        return str(value)

    async def _current_token(self) -> str | None:
        if self._token is None and self._token_provider is not None:
            self._token = await self._call_provider()
        elif self._access_expires_at is not None and time.time() >= self._access_expires_at - _REFRESH_MARGIN:
            await self._renew_token()
        return self._token

    async def _renew_token(self) -> bool:
        """A fresh access token from the provider, else from the refresh token over REST."""
        try:
            if self._token_provider is not None:
                self._token = await self._call_provider()
            elif self._refresh_token is not None:
                pair = await rest.refresh_access(self._http_client(), self._http_base(), self._refresh_token)
                self._token, self._refresh_token = pair.access, pair.refresh
            else:
                return False
        except Exception:  # reported as an auth failure by the caller
            log.warning("token renewal failed", exc_info=True)
            return False
        self._access_expires_at = None  # unknown until the next `ready`
        return True

    async def _choose_endpoint(self) -> str | None:
        if self._discovery_url and (not self._endpoints or self._failures_in_cycle >= len(self._endpoints)):
            await self._discover()
            self._failures_in_cycle = 0
        if not self._endpoints:
            return None
        return self._endpoints[self._endpoint_index % len(self._endpoints)]

    def _rotate(self) -> None:
        self._endpoint_index += 1
        self._failures_in_cycle += 1

    async def _discover(self) -> None:
        assert self._discovery_url is not None
        try:
            token = await self._current_token()
            nodes = await rest.fetch_nodes(self._http_client(), self._discovery_url, token)
        except Exception:  # keep the endpoints we have
            log.warning("node discovery at %s failed", self._discovery_url, exc_info=True)
            return
        if nodes:
            self._endpoints = [node.ws_url for node in nodes]
            self._endpoint_index = 0

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10.0)
        return self._http

    def _http_base(self) -> str:
        if self._http_base_url:
            return self._http_base_url
        if self._discovery_url:
            return rest.http_base_from_url(self._discovery_url)
        return rest.http_base_from_ws(self.endpoint or self._endpoints[0])

    # --- plumbing ---------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        if not self._stopped:
            self._queue.put_nowait(event)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._session_tasks.add(task)
        task.add_done_callback(self._session_tasks.discard)

    def _stop(self, error: TetherError | None, event: Disconnected) -> None:
        """Ends the client: last event, end of ``events()``, waiters failed."""
        if self._stopped:
            return
        self._emit(event)
        self._stopped = True
        self.error = error
        self._closing.set()
        self._queue.put_nowait(_END)
        for future in self._ack_waiters.values():
            if not future.done():
                future.set_exception(error or TetherClosed("client closed"))

    def _closed_error(self) -> TetherError:
        return self.error or TetherClosed("client closed")


def _decode(raw: str | bytes) -> dict[str, Any] | None:
    try:
        frame = json.loads(raw)
    except ValueError:
        log.warning("ignoring a frame that is not JSON")
        return None
    return frame if isinstance(frame, dict) else None


def _close_code(exc: ConnectionClosed) -> int | None:
    return exc.rcvd.code if exc.rcvd is not None else None
