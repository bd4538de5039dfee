"""docs/protocol.md is the whole contract and the repository stands on its own: nothing refers
to a contract outside it, and every frame type, error code and close code the code knows is in
the document."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from tether_client import close_rules

from realtime.core import closes, protocol
from realtime.core.closes import CloseReason
from tests.support.protocol_source import error_codes_in_code

pytestmark = pytest.mark.pure

CLOSE_REASONS = [v for v in vars(closes).values() if isinstance(v, CloseReason)]

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "protocol.md").read_text()
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".ini", ".cfg", ".yml", ".yaml", ".json", ".js", ".mjs",
                 ".ts", ".html", ".sh", ".conf", ""}
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", "staticfiles", "build", "dist"}


def _repository_text_files() -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".venv") and not d.endswith(".egg-info")]
        for name in names:
            path = Path(folder, name)
            if path.suffix in TEXT_SUFFIXES and path.stat().st_size < 2_000_000:
                files.append(path)
    return files


def test_nothing_refers_to_a_contract_outside_the_repository():
    # Spelled apart so that this file does not match itself.
    outside, contract = "../" + "shared", "shared/" + "protocol.md"
    hits = []
    for path in _repository_text_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if outside in line or contract in line:
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert hits == []


def _client_frame_types() -> set[str]:
    source = Path(protocol.__file__).read_text()
    return set(re.findall(r'kind == "([a-z.]+)"', source))


def _frame_index() -> set[str]:
    section = DOC.split("## Frame index", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z.]+)` \|", section, flags=re.MULTILINE))


def test_every_client_frame_type_is_in_the_frame_index():
    client_types = _client_frame_types()
    assert {"connect", "message", "ack", "ping", "auth.refresh", "cancel"} <= client_types
    assert client_types <= _frame_index()


def test_every_error_code_is_documented():
    # Every close's error code, and the error frames that do not close, as the code builds them.
    codes = error_codes_in_code()
    assert {r.code for r in CLOSE_REASONS} | {"too_long", "refresh_failed", "unavailable"} <= codes
    table = DOC.split("## Error frames and error codes", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)`", table, flags=re.MULTILINE))
    assert codes <= documented, codes - documented


def test_every_close_code_of_server_and_sdk_says_what_the_client_must_do():
    server = {r.close_code for r in CLOSE_REASONS}
    sdk = set(close_rules.STOP_CODES) | set(close_rules.GOING_AWAY_CODES) | set(close_rules.FRAME_TOO_LARGE_CODES)
    table = DOC.split("## Close codes and what the client must do", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"\b([1-4]\d{3})\b", table)}
    assert (server | sdk | {4429, 4408, 4401}) <= documented, (server | sdk) - documented
