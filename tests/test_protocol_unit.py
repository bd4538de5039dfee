"""The pure protocol module: parsing, the bad-frame budget, resume planning. No I/O. (Phases
and the delivery cursor: tests/test_connection_state.py.)"""

import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.core import closes
from realtime.core import protocol as p

pytestmark = pytest.mark.pure

CID = str(uuid.uuid4())


def parse(obj) -> p.ClientFrame:
    return p.parse_frame(p.decode_frame(json.dumps(obj), None, 65536), 1000)


def test_valid_frames():
    assert parse({"type": "connect", "token": "t", "conversation_id": CID, "last_seq": 5, "client_id": "tab-1"}) == (
        p.Connect(token="t", conversation_id=CID, last_seq=5, client_id="tab-1")
    )
    assert parse({"type": "message", "client_msg_id": CID, "text": "hi"}) == p.SendMessage(CID, "hi")
    assert parse({"type": "ack", "seq": 0}) == p.Ack(0)
    assert parse({"type": "ping", "id": [1]}) == p.Ping([1])
    assert parse({"type": "auth.refresh", "refresh": "r"}) == p.AuthRefresh("r", None)
    assert parse({"type": "auth.refresh", "access": "a"}) == p.AuthRefresh(None, "a")
    assert parse({"type": "cancel", "run_id": CID}) == p.Cancel(CID)


@pytest.mark.parametrize(
    "obj, detail",
    [
        (
            {"type": "connect", "token": "t", "client_id": "x", "conversation_id": "nope"},
            "'conversation_id' must be a UUID string",
        ),
        (
            {"type": "connect", "token": "t", "client_id": "has space"},
            "'client_id' must be a string of 1-64 letters, digits or -_.:",
        ),
        ({"type": "connect", "client_id": "x"}, "missing field 'token'"),
        (
            {"type": "connect", "token": "t", "client_id": "x", "last_seq": -1},
            "'last_seq' must be between 0 and 9007199254740992",
        ),
        (
            {"type": "connect", "token": "t", "client_id": "x", "last_seq": 2**53 + 1},
            "'last_seq' must be between 0 and 9007199254740992",
        ),
        ({"type": "connect", "token": "t", "client_id": "x", "last_seq": False}, "'last_seq' must be an integer"),
        ({"type": "message", "client_msg_id": "1", "text": "x"}, "'client_msg_id' must be a UUID string"),
        ({"type": "message", "client_msg_id": CID, "text": 5}, "'text' must be a non-empty string"),
        ({"type": "auth.refresh"}, "auth.refresh needs exactly one of 'refresh' or 'access'"),
        (
            {"type": "auth.refresh", "refresh": "r", "access": "a"},
            "auth.refresh needs exactly one of 'refresh' or 'access'",
        ),
        ({"type": "cancel"}, "missing field 'run_id'"),
        ({"type": 7}, "missing field 'type'"),
    ],
)
def test_invalid_frames(obj, detail):
    with pytest.raises(p.ProtocolError) as err:
        parse(obj)
    assert (err.value.code, err.value.detail, err.value.close) == ("bad_frame", detail, None)


def test_too_long_text_and_too_large_frame():
    with pytest.raises(p.ProtocolError) as err:
        p.parse_frame({"type": "message", "client_msg_id": CID, "text": "x" * 11}, 10)
    assert err.value.code == "too_long" and err.value.ref == CID
    with pytest.raises(p.ProtocolError) as err:
        p.decode_frame("é" * 600, None, 1000)  # 1200 bytes of UTF-8
    assert (err.value.code, err.value.close) == ("frame_too_large", closes.FRAME_TOO_LARGE)
    with pytest.raises(p.ProtocolError) as err:
        p.decode_frame(None, b"x" * 2000, 1000)
    assert err.value.close == closes.FRAME_TOO_LARGE
    with pytest.raises(p.ProtocolError) as err:
        p.decode_frame(None, b"{}", 1000)
    assert err.value.code == "bad_frame" and err.value.close is None


def test_bad_frame_budget_slides():
    budget = p.BadFrameBudget(limit=2, window=10)
    assert budget.spend(0) and budget.spend(1)
    assert not budget.spend(2)
    assert budget.spend(20)  # the old ones left the window


@pytest.mark.parametrize(
    "client, server, first_kept, created, expected",
    [
        (None, 0, 1, True, p.ResumePlan(False, 0, 0)),
        (None, 5, 1, False, p.ResumePlan(True, 0, 5)),
        (3, 5, 1, False, p.ResumePlan(True, 3, 2)),
        (5, 5, 1, False, p.ResumePlan(True, 5, 0)),
        (9, 5, 1, False, p.ResumePlan(False, 5, 0)),
        (1, 10, 4, False, p.ResumePlan(False, 10, 0)),
        (3, 10, 4, False, p.ResumePlan(True, 3, 7)),
    ],
)
def test_plan_resume(client, server, first_kept, created, expected):
    assert p.plan_resume(client, server, first_kept, created) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
frame_types = st.sampled_from(["connect", "message", "ack", "ping", "auth.refresh", "cancel", "x", ""])
frames = st.fixed_dictionaries(
    {"type": frame_types},
    optional={
        k: json_values | st.just(CID)
        for k in [
            "token",
            "conversation_id",
            "last_seq",
            "client_id",
            "client_msg_id",
            "text",
            "seq",
            "id",
            "refresh",
            "access",
            "run_id",
        ]
    },
)


@settings(max_examples=400, deadline=None)
@given(raw=st.one_of(st.text(max_size=200), frames.map(json.dumps), json_values.map(json.dumps)))
def test_any_input_parses_or_raises_a_documented_error(raw):
    try:
        frame = p.parse_frame(p.decode_frame(raw, None, 65536), 1000)
    except p.ProtocolError as err:
        assert err.code in {"bad_frame", "too_long", "frame_too_large"}
        assert err.frame()["type"] == "error"
        return
    assert isinstance(frame, (p.Connect, p.SendMessage, p.Ack, p.Ping, p.AuthRefresh, p.Cancel))
