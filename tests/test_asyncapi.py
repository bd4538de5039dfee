"""docs/asyncapi.yaml stays in step with the code and with docs/protocol.md: every client frame
realtime/core/protocol.py parses, every frame the server sends, every close and error code (the
close table realtime/core/closes.py and every error frame the socket code builds)."""

import ast
import re
from pathlib import Path

import yaml

from realtime.connection.consumer import ConversationConsumer
from realtime.core import closes
from tests.support.protocol_source import SOCKET_MODULES, error_codes_in_code, tree

ROOT = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
PROTOCOL_MD = (ROOT / "docs" / "protocol.md").read_text()


def client_frame_types() -> set[str]:
    """The `type` values parse_frame accepts (`kind == "..."`)."""
    parse = next(n for n in ast.walk(tree("realtime/core/protocol.py"))
                 if isinstance(n, ast.FunctionDef) and n.name == "parse_frame")
    return {
        c.comparators[0].value for c in ast.walk(parse)
        if isinstance(c, ast.Compare) and isinstance(c.left, ast.Name) and c.left.id == "kind"
        and isinstance(c.comparators[0], ast.Constant)
    }


def server_frame_types() -> set[str]:
    """Frames the server writes: `{"type": "..."}` literals and `frame_type=` of the socket
    code, and the event kinds the services append to the log. Messages between nodes are
    left out: the fan-out's `conv.events` and `conn.control` are built in realtime/fanout/hub.py,
    which is not a socket module, and never reach a client as they are."""
    found = set()
    for path in SOCKET_MODULES:
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values, strict=True):
                    if isinstance(k, ast.Constant) and k.value == "type" and isinstance(v, ast.Constant):
                        found.add(v.value)
            if isinstance(node, ast.keyword) and node.arg == "frame_type" and isinstance(node.value, ast.Constant):
                found.add(node.value.value)
    services = [str(f.relative_to(ROOT)) for f in sorted((ROOT / "sessions_app" / "services").glob("*.py"))]
    for node in (n for path in services for n in ast.walk(tree(path))):
        first = node.elts[0] if isinstance(node, ast.Tuple) and node.elts else None
        if (isinstance(first, ast.Constant) and isinstance(first.value, str)
                and re.fullmatch(r"(message|agent|approval)\.[a-z_]+", first.value)):
            found.add(first.value)
        if isinstance(node, ast.keyword) and node.arg == "type" and isinstance(node.value, ast.Constant):
            found.add(node.value.value)
    # The default of _terminate's frame_type.
    found.add("error")
    return {t for t in found if not hasattr(ConversationConsumer, t.replace(".", "_"))}


def _operation_types(name: str) -> set[str]:
    refs = [m["$ref"].rsplit("/", 1)[-1] for m in SPEC["operations"][name]["messages"]]
    return {SPEC["components"]["messages"][r]["payload"]["properties"]["type"]["const"] for r in refs}


def test_every_client_frame_is_described():
    parsed = client_frame_types()
    assert parsed == {"connect", "message", "ack", "ping", "auth.refresh", "cancel", "approval.respond"}, parsed
    assert _operation_types("sendToServer") == parsed


def test_every_server_frame_is_described():
    sent = server_frame_types()
    assert {"ready", "error", "reconnect", "agent.delta", "message.created"} <= sent, sent
    assert _operation_types("receiveFromServer") == sent, _operation_types("receiveFromServer") ^ sent


def test_messages_are_keyed_by_their_type_and_required_fields_exist():
    for name, message in SPEC["components"]["messages"].items():
        payload = message["payload"]
        assert payload["properties"]["type"]["const"] == name
        assert set(payload["required"]) <= set(payload["properties"]), name
    assert set(SPEC["channels"]["conversation"]["messages"]) == set(SPEC["components"]["messages"])


def test_close_and_error_codes_match_the_code():
    reasons = [v for v in vars(closes).values() if isinstance(v, closes.CloseReason)]
    close_codes = {r.close_code for r in reasons}
    assert {4012, 4401, 4408, 4409, 4429} <= close_codes
    assert close_codes <= set(SPEC["x-close-codes"]), close_codes - set(SPEC["x-close-codes"])
    error_codes = set(SPEC["components"]["messages"]["error"]["payload"]["properties"]["code"]["enum"])
    in_code = error_codes_in_code()
    assert {r.code for r in reasons} <= in_code
    assert error_codes == in_code, error_codes ^ in_code


def test_in_step_with_protocol_md():
    """Everything the AsyncAPI document names, docs/protocol.md explains, and the other way."""
    for name in SPEC["components"]["messages"]:
        assert f'"type":"{name}"' in PROTOCOL_MD, f"docs/protocol.md shows no {name} frame"
    documented = set(re.findall(r'"type":"([a-z._]+)"', PROTOCOL_MD))
    assert documented == set(SPEC["components"]["messages"]), documented ^ set(SPEC["components"]["messages"])
    for code in SPEC["x-close-codes"]:
        if code != 1000:  # the normal close needs no explanation
            assert str(code) in PROTOCOL_MD, f"close code {code} is not in docs/protocol.md"
    for code in SPEC["components"]["messages"]["error"]["payload"]["properties"]["code"]["enum"]:
        assert re.search(rf"\b{code}\b", PROTOCOL_MD), f"error code {code} is not in docs/protocol.md"
