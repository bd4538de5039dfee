"""What the socket code itself says about the wire, read from its source (not imported): the
error codes it can send. Shared by the tests that hold docs/protocol.md and docs/asyncapi.yaml
to the code, so neither keeps its own list."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where the socket's frames are built: the state machine, its close table, the parser, the glue.
SOCKET_MODULES = ("realtime/connection/consumer.py", "realtime/connection/base.py", "realtime/connection/session.py",
                  "realtime/connection/frames.py", "realtime/connection/state.py", "realtime/core/closes.py",
                  "realtime/core/protocol.py")


def tree(path: str) -> ast.AST:
    return ast.parse((ROOT / path).read_text())


def error_codes_in_code() -> set[str]:
    """First arguments of error_frame(...), ProtocolError(...) and CloseReason(...): every error
    `code` the server can send, closing or not."""
    found = set()
    for path in SOCKET_MODULES:
        for node in ast.walk(tree(path)):
            if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and getattr(node.func, "id", getattr(node.func, "attr", None))
                    in ("error_frame", "ProtocolError", "CloseReason")):
                found.add(node.args[0].value)
    return found
