"""The SDK's close-code table (tether_client.close_rules)."""

import pytest
from tether_client.close_rules import Action, decide

pytestmark = pytest.mark.pure


@pytest.mark.parametrize("code", [1001, 1012, 4012])
def test_going_away_retries_at_once_on_another_node(code):
    decision = decide(code)
    assert decision.action is Action.RETRY_NOW
    assert decision.rotate
    assert decision.delay_ms == 0


@pytest.mark.parametrize("code", [4012, 1006, None, 1000, 4408])
def test_a_reconnect_frame_means_retry_now(code):
    decision = decide(code, reconnect=True)
    assert decision.action is Action.RETRY_NOW
    assert decision.rotate


@pytest.mark.parametrize("code", [4403, 4404, 4409, 4400])
def test_a_reconnect_frame_does_not_override_a_hard_stop(code):
    assert decide(code, reconnect=True).action is Action.STOP


@pytest.mark.parametrize("code", [4413, 1009])
def test_frame_too_large_drops_the_refused_message(code):
    """Never STOP with the rest of the outbox unsent, never resend the refused frame: the
    client drops the message it blames (tether_client.oversize), or stops if it blames none."""
    for decision in (decide(code), decide(code, reconnect=True)):
        assert decision.action is Action.DROP_MESSAGE
        assert "frame too large" in decision.reason


def test_rate_limited_waits_retry_after_from_the_error_frame():
    error = {"type": "error", "code": "rate_limited", "retry_after_ms": 1500}
    decision = decide(4429, error=error)
    assert decision.action is Action.RETRY_AFTER
    assert decision.delay_ms == 1500


def test_rate_limited_explicit_retry_after_wins():
    decision = decide(4429, error={"code": "rate_limited", "retry_after_ms": 1500}, retry_after_ms=200)
    assert (decision.action, decision.delay_ms) == (Action.RETRY_AFTER, 200)


def test_rate_limited_without_retry_after_backs_off():
    assert decide(4429).action is Action.BACKOFF


@pytest.mark.parametrize(
    ("code", "why"),
    [
        (1000, "normal close"),
        (4400, "too many bad frames"),
        (4403, "not your conversation"),
        (4404, "no such conversation"),
        (4409, "replaced"),
        (1002, "protocol error"),
        (1003, "unsupported data"),
        (1007, "invalid frame payload"),
        (1008, "policy violation"),
    ],
)
def test_codes_that_retrying_cannot_fix_stop(code, why):
    decision = decide(code)
    assert decision.action is Action.STOP
    assert why in decision.reason
    assert not decision.retries


@pytest.mark.parametrize("code", [4402, 4405, 4410, 4418, 4499])
def test_unknown_4400_series_codes_stop(code):
    assert decide(code).action is Action.STOP


def test_unauthenticated_refreshes_the_token_then_retries():
    assert decide(4401).action is Action.REFRESH_TOKEN
    assert decide(4401, error={"code": "token_expired"}).action is Action.REFRESH_TOKEN


def test_heartbeat_timeout_backs_off():
    decision = decide(4408)
    assert decision.action is Action.BACKOFF
    assert decision.retries


@pytest.mark.parametrize("code", [1006, 1011, 1013, 1014, None, 4000, 4500, 4999, 3000])
def test_lost_and_unknown_codes_back_off_on_another_node(code):
    decision = decide(code)
    assert decision.action is Action.BACKOFF
    assert decision.rotate


@pytest.mark.parametrize(
    ("error_code", "action"),
    [
        ("going_away", Action.RETRY_NOW),
        ("forbidden", Action.STOP),
        ("not_found", Action.STOP),
        ("replaced", Action.STOP),
        ("frame_too_large", Action.DROP_MESSAGE),
        ("token_expired", Action.REFRESH_TOKEN),
        ("unauthenticated", Action.REFRESH_TOKEN),
        ("heartbeat_timeout", Action.BACKOFF),
    ],
)
def test_error_frame_names_the_cause_when_the_close_code_is_lost(error_code, action):
    assert decide(1006, error={"type": "error", "code": error_code}).action is action
    assert decide(None, error={"type": "error", "code": error_code}).action is action


def test_rate_limited_error_before_a_lost_close_waits():
    decision = decide(1006, error={"code": "rate_limited", "retry_after_ms": 300})
    assert (decision.action, decision.delay_ms) == (Action.RETRY_AFTER, 300)


def test_per_message_rate_limit_error_does_not_explain_a_drop():
    # The per-conversation message limit carries `ref` and keeps the socket open.
    error = {"code": "rate_limited", "retry_after_ms": 300, "ref": "6f1e"}
    assert decide(1006, error=error).action is Action.BACKOFF


def test_the_close_code_wins_over_the_error_frame():
    assert decide(4012, error={"code": "forbidden"}).action is Action.RETRY_NOW
