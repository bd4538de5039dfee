"""The connection state machine (realtime/connection/state.py), bytes in and actions out, with
no server, Redis or database: every phase, deadline, budget, close and delivery rule."""

from __future__ import annotations

import json
import uuid

import pytest

from realtime.connection import state as cs
from realtime.core import closes
from realtime.core import protocol as p

pytestmark = pytest.mark.pure

CID = str(uuid.uuid4())
LIMITS = cs.Limits(
    connect_timeout=10,
    heartbeat_interval_ms=25000,
    heartbeat_timeout=50,
    token_warning=60,
    bad_frame_limit=3,
    bad_frame_window=60,
    frame_capacity=5,
    frame_per_second=1,
    frame_overrun_close=2,
    ack_flush_interval=5,
    replay_batch=3,
    inline_events=4,
    max_frame_bytes=1000,
    max_message_chars=20,
)
WALL = 1_800_000_000  # Unix time at loop time 0 in these tests
EXPIRES = WALL + 300


def frame(**fields) -> str:
    return json.dumps(fields)


CONNECT = frame(type="connect", token="t", conversation_id=None, last_seq=None, client_id="c1")


def event(seq: int, kind: str = "agent.delta") -> tuple[int, str]:
    """A wire frame: (seq, JSON text)."""
    return seq, json.dumps({"type": kind, "seq": seq, "run_id": "r", "index": seq, "text": f"t{seq}"})


def closing(actions) -> cs.Close:
    assert len(actions) >= 1 and isinstance(actions[-1], cs.Close), actions
    return actions[-1]


def new_state(now: float = 0.0) -> cs.ConnectionState:
    return cs.ConnectionState(LIMITS, now)


def ready_state(last_seq: int = 0, client_last_seq: int | None = None, now: float = 0.0) -> cs.ConnectionState:
    state = new_state(now)
    [auth] = state.receive(CONNECT, None, now)
    assert isinstance(auth, cs.Authenticate)
    state.identified(EXPIRES)
    state.opened(conversation_id=CID, client_last_seq=client_last_seq, last_seq=last_seq, first_kept_seq=1,
                 created=False, intact=True, node="n1")
    return state


# --- phases ---------------------------------------------------------------------------------


def test_first_frame_must_be_connect():
    state = new_state()
    close = closing(state.receive(frame(type="ping", id=1), None, 1.0))
    assert close.frame() == {"type": "error", "code": "unauthenticated", "detail": "the first frame must be 'connect'"}
    assert close.reason.close_code == 4401 and state.closed


def test_connect_starts_the_connect_and_only_pings_are_answered_meanwhile():
    state = new_state()
    [auth] = state.receive(CONNECT, None, 1.0)
    assert auth == cs.Authenticate(p.Connect(token="t", conversation_id=None, last_seq=None, client_id="c1"))
    assert state.phase is cs.Phase.CONNECTING
    assert state.receive(frame(type="ping", id=2), None, 1.1) == [cs.Send({"type": "pong", "id": 2})]
    [refused] = state.receive(frame(type="ack", seq=1), None, 1.2)
    assert refused.frame == {"type": "error", "code": "bad_frame", "detail": "wait for 'ready' before sending this"}
    assert not state.closed


def test_ready_frame_and_a_second_connect():
    state = new_state()
    state.receive(CONNECT, None, 0)
    state.identified(EXPIRES)
    [ready] = state.opened(conversation_id=CID, client_last_seq=3, last_seq=7, first_kept_seq=1, created=False,
                           intact=True, node="n1")
    assert ready == cs.Send({"type": "ready", "conversation_id": CID, "resumed": True, "last_seq": 7, "replay_count": 4,
                             "heartbeat_interval_ms": 25000, "access_expires_at": EXPIRES, "node": "n1"})
    assert state.phase is cs.Phase.READY and state.sent_seq == 3
    [refused] = state.receive(CONNECT, None, 1)
    assert refused.frame["code"] == "bad_frame" and "already connected" in refused.frame["detail"]


@pytest.mark.parametrize(
    "client, first_kept, created, intact, resumed, sent",
    [
        (None, 1, True, True, False, 7),  # new conversation (last_seq 7 only in this table)
        (None, 1, False, True, True, 0),  # a new device: the whole log
        (7, 1, False, True, True, 7),  # up to date
        (9, 1, False, True, False, 7),  # ahead of the log: not from here
        (1, 5, False, True, False, 7),  # pruned past the client
        (3, 1, False, False, False, 7),  # a hole in the log after the client's seq
    ],
)
def test_resume_plans(client, first_kept, created, intact, resumed, sent):
    state = new_state()
    state.receive(CONNECT, None, 0)
    [ready] = state.opened(conversation_id=CID, client_last_seq=client, last_seq=7, first_kept_seq=first_kept,
                           created=created, intact=intact, node="n")
    assert ready.frame["resumed"] is resumed and state.sent_seq == sent
    assert ready.frame["replay_count"] == 7 - sent


# --- deadlines --------------------------------------------------------------------------------


def test_connect_timeout_counts_only_until_the_connect_frame():
    state = new_state(now=100.0)
    assert state.tick(105.0, WALL) == ([], 110.0)
    close = closing(state.tick(110.0, WALL)[0])
    assert close.frame() == {"type": "error", "code": "unauthenticated", "detail": "no 'connect' frame within 10 s"}

    slow = new_state(now=100.0)
    slow.receive(CONNECT, None, 109.0)
    slow.identified(EXPIRES)
    # The connect (and the replay after it) may take longer than the connect timeout.
    actions, deadline = slow.tick(130.0, WALL + 30)
    assert actions == [] and deadline == 109.0 + 50
    assert not slow.closed


def test_heartbeat_deadline_moves_with_every_frame():
    state = ready_state(now=0.0)
    assert state.tick(10.0, WALL + 10)[1] == 50.0
    state.receive(frame(type="ping", id=1), None, 30.0)
    assert state.tick(60.0, WALL + 60) == ([], 80.0)
    close = closing(state.tick(80.0, WALL + 80)[0])
    assert close.frame() == {"type": "error", "code": "heartbeat_timeout", "detail": "no frame for 50 s"}
    assert close.reason.close_code == 4408
    assert state.tick(90.0, WALL + 90) == ([], None)


def test_token_warning_once_then_expiry():
    state = ready_state(now=0.0)
    state.receive(frame(type="ping", id=1), None, 239.0)  # keep the heartbeat away
    actions, deadline = state.tick(239.0, EXPIRES - 61)
    assert actions == [] and deadline == pytest.approx(240.0)
    actions, deadline = state.tick(240.0, EXPIRES - 60)
    assert actions == [cs.Send({"type": "auth.expiring", "access_expires_at": EXPIRES})]
    assert deadline == pytest.approx(289.0)  # the heartbeat (239 + 50) comes before the expiry
    state.receive(frame(type="ping", id=2), None, 280.0)
    assert state.tick(281.0, EXPIRES - 19) == ([], pytest.approx(300.0))  # warned once only
    close = closing(state.tick(300.0, EXPIRES)[0])
    assert close.frame() == {"type": "error", "code": "token_expired", "detail": "access token expired; refresh it"}
    assert close.reason.close_code == 4401


def test_refresh_moves_the_expiry_and_rearms_the_warning():
    state = ready_state(now=0.0)
    state.receive(frame(type="ping", id=1), None, 240.0)
    assert state.tick(240.0, EXPIRES - 60)[0] != []
    [reply] = state.refreshed(EXPIRES + 300, "new-access", "new-refresh")
    assert reply.frame == {"type": "auth.refreshed", "access_expires_at": EXPIRES + 300, "access": "new-access",
                           "refresh": "new-refresh"}
    assert state.expiry_warned is False
    assert state.refreshed(EXPIRES + 600) == [cs.Send({"type": "auth.refreshed", "access_expires_at": EXPIRES + 600})]
    assert state.refresh_refused("nope") == [cs.Send({"type": "error", "code": "refresh_failed", "detail": "nope"})]
    assert state.access_expires_at == EXPIRES + 600


def test_no_token_deadline_before_the_token_is_verified():
    state = new_state(now=0.0)
    state.receive(CONNECT, None, 1.0)
    assert state.tick(2.0, WALL) == ([], 51.0)


# --- budgets ------------------------------------------------------------------------------------


def test_frame_rate_errors_then_closes_after_overruns_in_a_row():
    state = ready_state(now=0.0)  # the connect frame took one of the 5
    for i in range(4):
        assert state.receive(frame(type="ping", id=i), None, 0.0) == [cs.Send({"type": "pong", "id": i})]
    [slow_down] = state.receive(frame(type="ping", id=5), None, 0.0)
    assert slow_down.frame == {"type": "error", "code": "rate_limited", "detail": "too many frames; slow down",
                               "retry_after_ms": 1001}
    state.receive(frame(type="ping", id=6), None, 0.0)
    close = closing(state.receive(frame(type="ping", id=7), None, 0.0))
    assert (close.reason, close.extra) == (closes.RATE_LIMITED, {"retry_after_ms": 1001})


def test_an_allowed_frame_resets_the_overrun_count():
    state = ready_state(now=0.0)
    for i in range(4):
        state.receive(frame(type="ping", id=i), None, 0.0)
    state.receive(frame(type="ping", id=5), None, 0.0)
    state.receive(frame(type="ping", id=6), None, 0.0)
    assert state.receive(frame(type="ping", id=7), None, 1.5) == [cs.Send({"type": "pong", "id": 7})]
    assert state.frame_overruns == 0


def test_bad_frames_are_answered_then_close_4400():
    state = ready_state(now=0.0)
    for i in range(3):
        [err] = state.receive("not json", None, float(i))
        assert err.frame == {"type": "error", "code": "bad_frame", "detail": "frame is not valid JSON"}
    actions = state.receive(frame(type="message", client_msg_id=str(uuid.uuid4()), text="x" * 21), None, 3.0)
    assert actions[0].frame["code"] == "too_long"
    assert closing(actions).frame() == {"type": "error", "code": "bad_frame",
                                        "detail": "more than 3 bad frames in 60 s"}
    assert closing(actions).reason.close_code == 4400


def test_bad_frames_outside_the_window_do_not_count():
    state = ready_state(now=0.0)
    for i in range(10):
        assert not any(isinstance(a, cs.Close) for a in state.receive("[]", None, i * 30.0))


def test_too_large_frame_closes_4413():
    state = ready_state(now=0.0)
    close = closing(state.receive("x" * 1001, None, 1.0))
    assert close.frame() == {"type": "error", "code": "frame_too_large", "detail": "frame exceeds 1000 bytes"}
    assert close.reason.close_code == 4413


# --- frames that call services --------------------------------------------------------------------


def test_frames_become_service_calls():
    state = ready_state()
    msg = str(uuid.uuid4())
    run = str(uuid.uuid4())
    assert state.receive(frame(type="message", client_msg_id=msg, text="hi"), None, 1) == [
        cs.PostMessage(p.SendMessage(msg, "hi"))]
    assert state.receive(frame(type="cancel", run_id=run), None, 1) == [cs.CancelRun(run)]
    assert state.receive(frame(type="auth.refresh", access="a"), None, 1) == [cs.Renew(p.AuthRefresh(None, "a"))]


def test_service_outcomes_and_failures():
    state = ready_state()
    msg = str(uuid.uuid4())
    assert state.message_posted(msg, 4, False) == [
        cs.Send({"type": "message.ack", "client_msg_id": msg, "seq": 4, "duplicate": False})]
    assert state.message_limited(msg, 1500) == [cs.Send(
        {"type": "error", "code": "rate_limited", "detail": "too many messages in this conversation", "ref": msg,
         "retry_after_ms": 1500})]
    assert state.message_limited(msg, 10, per_user=True)[0].frame["detail"] == (
        "too many agent runs started by this user")
    assert state.cancel_unknown("r1") == [
        cs.Send({"type": "error", "code": "not_found", "detail": "no such run in this conversation", "ref": "r1"})]
    assert state.handler_failed(msg, transient=True) == [cs.Send(
        {"type": "error", "code": "unavailable", "detail": "temporarily unavailable; retry", "ref": msg,
         "retry_after_ms": 1000})]
    assert state.handler_failed(None, transient=False)[0].frame == {
        "type": "error", "code": "server_error", "detail": "the server failed to handle this frame",
        "retry_after_ms": 1000}
    assert not state.closed
    close = closing(state.conversation_gone())
    assert (close.reason.code, close.reason.close_code) == ("not_found", 4404)


# --- the connect's refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, frame_, close_code",
    [
        (lambda s: s.token_refused("Token is expired", expired=True),
         {"type": "error", "code": "token_expired", "detail": "access token refused: Token is expired"}, 4401),
        (lambda s: s.token_refused("bad signature", expired=False),
         {"type": "error", "code": "unauthenticated", "detail": "access token refused: bad signature"}, 4401),
        (lambda s: s.limited("user", 2500),
         {"type": "error", "code": "rate_limited", "detail": "too many connection attempts", "retry_after_ms": 2500},
         4429),
        (lambda s: s.limited("slots", 10),
         {"type": "error", "code": "rate_limited", "detail": "too many open connections for this user",
          "retry_after_ms": 10}, 4429),
        (lambda s: s.connect_failed("forbidden", "not your conversation"),
         {"type": "error", "code": "forbidden", "detail": "not your conversation"}, 4403),
        (lambda s: s.connect_failed("not_found", "no such conversation"),
         {"type": "error", "code": "not_found", "detail": "no such conversation"}, 4404),
        (lambda s: s.connect_failed("unauthenticated", "token was revoked"),
         {"type": "error", "code": "unauthenticated", "detail": "token was revoked"}, 4401),
        (lambda s: s.connect_failed("unavailable", "service unavailable; resume shortly"),
         {"type": "error", "code": "going_away", "detail": "service unavailable; resume shortly",
          "retry_after_ms": 1000}, 4012),
        (lambda s: s.connect_failed("feed_unavailable", "live feed unavailable; reconnect"),
         {"type": "error", "code": "going_away", "detail": "live feed unavailable; reconnect",
          "retry_after_ms": 1000}, 4012),
    ],
)
def test_connect_refusals(call, frame_, close_code):
    state = new_state()
    state.receive(CONNECT, None, 0)
    close = closing(call(state))
    assert close.frame() == frame_ and close.reason.close_code == close_code
    assert state.close == close


# --- endings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "finding, code, close_code, detail",
    [
        ("replaced", "replaced", 4409, "a newer connection of this client took over"),
        ("closed", "going_away", 4012, "this connection was closed by the server; resume"),
        ("inactive", "unauthenticated", 4401, "user is deactivated"),
        ("revoked", "unauthenticated", 4401, "token was revoked; sign in again"),
    ],
)
def test_resync_findings_that_close(finding, code, close_code, detail):
    state = ready_state()
    close = closing(state.resynced(finding, 0, 0))
    assert close.frame() == {"type": "error", "code": code, "detail": detail}
    assert close.reason.close_code == close_code


def test_resync_ok_moves_the_target_and_the_stored_ack():
    state = ready_state(last_seq=2, client_last_seq=2)
    state.receive(frame(type="ack", seq=2), None, 1)
    assert state.resynced("ok", 5, 2) == []
    assert state.acked_written == 2 and state.unflushed_ack() is None
    assert state.next_delivery() == cs.ReadLog(2, 5, 3)


def test_drain_sends_a_reconnect_frame():
    state = ready_state()
    close = closing(state.terminate(closes.DRAINING, "server is restarting", retry_after_ms=0))
    assert close.frame() == {"type": "reconnect", "reason": "server is restarting", "retry_after_ms": 0}
    assert close.reason.close_code == 4012


def test_closed_is_final():
    state = ready_state()
    state.terminate(closes.REPLACED, "x")
    assert state.receive(frame(type="ping", id=1), None, 1) == []
    assert state.tick(1000, WALL + 1000) == ([], None)
    assert state.terminate(closes.GOING_AWAY, "again") == []
    assert state.resynced("revoked", 0, 0) == []
    assert state.live({"upto": 9, "frames": [event(1)]}) is False
    assert state.next_delivery() is None
    assert state.close.reason == closes.REPLACED


def test_what_the_connection_row_records():
    assert new_state().disconnected(1000) == (1000, "client_closed")
    assert new_state().disconnected(1001) == (1001, "client_closed")
    state = ready_state()
    assert state.disconnected(1006) == (1006, "connection_lost") and state.closed
    closed_first = ready_state()
    closed_first.terminate(closes.DRAINING, "server is restarting")
    assert closed_first.ended == (4012, "going_away")
    assert closed_first.disconnected(1006) == (4012, "going_away")


# --- acks -----------------------------------------------------------------------------------------


def test_acks_are_cumulative_and_stored_at_most_every_interval():
    state = ready_state()
    assert state.receive(frame(type="ack", seq=3), None, 10.0) == [cs.FlushAck(3)]
    assert state.receive(frame(type="ack", seq=5), None, 11.0) == []
    assert state.receive(frame(type="ack", seq=4), None, 16.0) == [cs.FlushAck(5)]  # never backwards
    assert state.unflushed_ack() is None
    assert state.receive(frame(type="ack", seq=6), None, 17.0) == []
    assert state.unflushed_ack() == 6  # what the close stores


def test_a_failed_ack_store_is_retried():
    state = ready_state()
    assert state.receive(frame(type="ack", seq=3), None, 10.0) == [cs.FlushAck(3)]
    state.ack_flush_failed(3)
    assert state.unflushed_ack() == 3
    assert state.receive(frame(type="ack", seq=3), None, 10.5) == [cs.FlushAck(3)]


# --- delivery -------------------------------------------------------------------------------------


def test_replay_reads_the_log_in_batches():
    state = ready_state(last_seq=5, client_last_seq=1)
    step = state.next_delivery()
    assert step == cs.ReadLog(after=1, upto=5, limit=3)
    assert state.log_read(step, [event(2), event(3), event(4)]) == []
    deliver = state.next_delivery()
    assert deliver == cs.Deliver([event(2), event(3), event(4)])
    for seq, _ in deliver.frames:
        state.delivered(seq)
    assert state.next_delivery() == cs.ReadLog(after=4, upto=5, limit=3)
    state.log_read(cs.ReadLog(4, 5, 3), [event(5)])
    state.delivered(state.next_delivery().frames[-1][0])
    assert state.next_delivery() is None and state.sent_seq == 5


def test_live_events_are_sent_without_reading_the_log_once_and_in_order():
    state = ready_state(last_seq=2, client_last_seq=2)
    assert state.live({"upto": 3, "frames": [event(3)]}) is True
    assert state.next_delivery() == cs.Deliver([event(3)])
    state.delivered(3)
    assert state.live({"upto": 3, "frames": [event(3)]}) is True  # a duplicate: nothing to do
    assert state.next_delivery() is None
    # Out of order: 5 before 4. The sender reads 4 from the log, then sends the 5 it holds.
    state.live({"upto": 5, "frames": [event(5)]})
    assert state.next_delivery() == cs.ReadLog(after=3, upto=4, limit=3)
    state.log_read(cs.ReadLog(3, 4, 3), [event(4)])
    assert state.next_delivery() == cs.Deliver([event(4), event(5)])


def test_announcements_without_events_are_read_from_the_log():
    state = ready_state(last_seq=2, client_last_seq=2)
    assert state.live({"upto": 4, "frames": None}) is True
    assert state.next_delivery() == cs.ReadLog(after=2, upto=4, limit=3)


def test_live_events_during_the_connect_are_kept_for_after_ready():
    state = new_state()
    state.receive(CONNECT, None, 0)
    state.live({"upto": 6, "frames": [event(6)]})
    state.opened(conversation_id=CID, client_last_seq=4, last_seq=5, first_kept_seq=1, created=False, intact=True,
                 node="n")
    assert state.next_delivery() == cs.ReadLog(after=4, upto=5, limit=3)
    state.log_read(cs.ReadLog(4, 5, 3), [event(5)])
    assert state.next_delivery() == cs.Deliver([event(5), event(6)])


def test_inline_events_beyond_the_buffer_are_left_to_the_log():
    state = ready_state(last_seq=0, client_last_seq=0)
    state.live({"upto": 9, "frames": [event(s) for s in range(2, 10)]})  # 1 is missing
    assert sorted(state.pending) == [2, 3, 4, 5]
    assert state.next_delivery() == cs.ReadLog(after=0, upto=1, limit=3)


@pytest.mark.parametrize(
    "batch, missing",
    [([event(3)], 2), ([event(2), event(4)], 3), ([], 2)],
)
def test_a_hole_in_the_log_closes_going_away_instead_of_crashing(batch, missing):
    state = ready_state(last_seq=4, client_last_seq=1)
    close = closing(state.log_read(cs.ReadLog(1, 4, 3), batch))
    detail = f"the event log has no seq {missing}; resume"
    assert close.frame() == {"type": "error", "code": "going_away", "detail": detail}
    assert close.reason.close_code == 4012


def test_a_lost_live_feed_reads_the_log_to_its_end():
    state = ready_state(last_seq=2, client_last_seq=2)
    assert state.lost_live_feed() is True
    step = state.next_delivery()
    assert step == cs.ReadLog(after=2, upto=None, limit=3)
    state.log_read(step, [event(3), event(4), event(5)])  # a full batch: maybe more
    for s in (3, 4, 5):
        state.delivered(s)
    step = state.next_delivery()
    assert step == cs.ReadLog(after=5, upto=None, limit=3)
    assert state.log_read(step, []) == []  # the end: nothing missing
    assert state.next_delivery() is None and not state.closed


# --- backpressure ------------------------------------------------------------------------------


def test_the_sender_waits_while_the_backlog_is_over_the_bound_then_gives_up():
    limits = cs.Limits(max_unsent_bytes=1000, send_stall_timeout=30)
    state = cs.ConnectionState(limits, 0.0)
    assert state.may_send(1000, 1.0) is True
    assert state.may_send(1001, 2.0) is False
    assert state.may_send(5000, 31.9) is False
    assert state.may_send(10, 32.0) is True  # it read: the stall is over
    assert state.may_send(1001, 40.0) is False
    close = closing(state.may_send(1001, 70.0))
    assert close.frame() == {"type": "error", "code": "slow_consumer", "detail": "the client read nothing for 30 s"}
    assert close.reason.close_code == 4408 and close.reason.abort


def test_the_first_replay_batch_read_with_the_session_is_delivered_without_a_read():
    state = new_state()
    state.receive(CONNECT, None, 0)
    actions = state.opened(conversation_id=CID, client_last_seq=2, last_seq=4, first_kept_seq=1, created=False,
                           intact=True, node="n", frames=[event(3), event(4)])
    assert [type(a) for a in actions] == [cs.Send]
    assert state.next_delivery() == cs.Deliver([event(3), event(4)])


def test_a_first_batch_is_ignored_when_the_plan_does_not_resume():
    state = new_state()
    state.receive(CONNECT, None, 0)
    state.opened(conversation_id=CID, client_last_seq=2, last_seq=4, first_kept_seq=1, created=False,
                 intact=False, node="n", frames=[event(3), event(4)])
    assert state.next_delivery() is None and state.pending == {}


def test_a_long_replay_reads_what_follows_while_it_sends():
    state = ready_state(last_seq=10, client_last_seq=0)
    assert state.read_ahead() is None  # nothing in hand yet: a plain read comes first
    step = state.next_delivery()
    assert step == cs.ReadLog(0, 10, 3)
    state.log_read(step, [event(1), event(2), event(3)])
    ahead = state.read_ahead()
    assert ahead == cs.ReadLog(3, 10, 3)
    for seq, _ in state.next_delivery().frames:
        state.delivered(seq)
    state.log_read(ahead, [event(4), event(5), event(6)])
    assert state.next_delivery() == cs.Deliver([event(4), event(5), event(6)])
    state.live({"upto": 10, "frames": [event(9)]})
    assert state.read_ahead() == cs.ReadLog(6, 8, 3)  # up to the frame already in hand


# --- decided for the consumer (issue 20: the consumer decides nothing) ------------------------


def test_a_client_address_is_held_to_its_connect_rate_and_a_refusal_closes_4429():
    state = new_state()
    assert state.admit("") == []  # no address (in-process): no limit to check
    [check] = state.admit("203.0.113.7")
    assert check == cs.CheckLimit("ip", "ip:203.0.113.7")
    assert state.limit_checked(check, allowed=True, retry_after_ms=0) == []
    close = closing(state.limit_checked(check, allowed=False, retry_after_ms=1500))
    assert close.frame() == {"type": "error", "code": "rate_limited", "detail": "too many connection attempts",
                             "retry_after_ms": 1500}
    assert close.reason.close_code == 4429
    assert state.admit("203.0.113.7") == []  # closed: nothing more to check


@pytest.mark.parametrize("action, code, close_code", [("replaced", "replaced", 4409),
                                                       ("disconnect", "operator_disconnect", 4012)])
def test_a_control_message_ends_the_socket_its_own_way(action, code, close_code):
    state = ready_state()
    close = closing(state.control(action))
    assert (close.frame()["code"], close.reason.close_code) == (code, close_code)
    assert state.closed and state.ended == (close_code, code)


def test_an_unknown_control_action_is_left_to_the_caller():
    state = ready_state()
    assert state.control("kick") is None
    assert not state.closed
