"""The fan-out's control messages (realtime.fanout.publish.tell): the vocabulary the sender checks and
the one the socket acts on are the same, and an unknown action is refused when it is made.
End to end: tests/test_client_id_replacement.py (replaced) and tests/test_admin_actions.py
(an operator's disconnect)."""

import json

import pytest

from realtime.connection.state import CONTROL_CLOSES
from realtime.fanout.publish import CONTROL_ACTIONS, control_message

pytestmark = pytest.mark.pure


def test_every_control_action_ends_a_socket_in_a_known_way():
    assert set(CONTROL_CLOSES) == set(CONTROL_ACTIONS)


def test_a_control_message_names_its_action_and_sockets():
    assert json.loads(control_message("replaced", ["ws.a", "ws.b"])) == {
        "type": "conn.control", "action": "replaced", "to": ["ws.a", "ws.b"]}


def test_an_unknown_action_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown control action 'kick'"):
        control_message("kick", ["ws.a"])
