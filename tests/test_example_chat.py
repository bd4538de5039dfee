"""The runnable example `clients/python/examples/chat.py`, run as a user would: when the server
is not there (or refuses the login), one line that names the URL, and a non-zero exit; never a
traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.ports import free_port

pytestmark = pytest.mark.pure

EXAMPLE = Path(__file__).resolve().parents[1] / "clients" / "python" / "examples" / "chat.py"


def _run(http_url: str, ws_url: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "TETHER_HTTP_URL": http_url, "TETHER_WS_URL": ws_url}
    return subprocess.run([sys.executable, str(EXAMPLE), "ada", "secret", "hello"], env=env,
                          capture_output=True, text=True, timeout=60)


def _assert_one_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.stdout == ""


@pytest.fixture
def token_server() -> Iterator[callable]:
    """A stand-in for `POST /api/auth/token/` answering with ``status``."""
    servers: list[ThreadingHTTPServer] = []

    def start(status: int) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = {"access": "a", "refresh": "r"} if status == 200 else {"detail": "No active account"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_no_server_listening_one_line_with_the_url():
    port = free_port()
    result = _run(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws/v1/")
    _assert_one_line(result, "could not reach", f"http://127.0.0.1:{port}/api/auth/token/")


def test_websocket_endpoint_not_listening_one_line_with_the_url(token_server):
    ws_url = f"ws://127.0.0.1:{free_port()}/ws/v1/"
    result = _run(token_server(200), ws_url)
    _assert_one_line(result, "could not reach", ws_url)


def test_refused_login_one_line(token_server):
    http_url = token_server(401)
    result = _run(http_url, f"ws://127.0.0.1:{free_port()}/ws/v1/")
    _assert_one_line(result, "login refused for 'ada'", f"{http_url}/api/auth/token/")
