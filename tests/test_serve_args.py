"""The production launcher's daphne arguments (no server started)."""

import pytest

from realtime.serve import daphne_args, listen_endpoint

pytestmark = pytest.mark.pure


def test_listen_endpoint_has_a_large_backlog_and_escapes_ipv6():
    assert listen_endpoint("0.0.0.0", 8000, 2048) == "tcp:port=8000:interface=0.0.0.0:backlog=2048"
    assert listen_endpoint("::", 8000, 64) == "tcp:port=8000:interface=\\:\\::backlog=64"


def test_daphne_args_from_environment(monkeypatch):
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("BIND", "127.0.0.1")
    monkeypatch.setenv("DAPHNE_BACKLOG", "512")
    monkeypatch.setenv("REALTIME_MAX_FRAME_BYTES", "1000")
    args = daphne_args(["--verbosity", "0"])
    assert args[args.index("--endpoint") + 1] == "tcp:port=9001:interface=127.0.0.1:backlog=512"
    assert args[args.index("--websocket-max-message-size") + 1] == "2000"
    assert args[-3:] == ["--verbosity", "0", "project.asgi:application"]


def test_close_handshake_timeout_from_environment(monkeypatch):
    from realtime.serve import close_handshake_timeout

    monkeypatch.delenv("DAPHNE_CLOSE_HANDSHAKE_TIMEOUT", raising=False)
    assert close_handshake_timeout() == 5.0
    monkeypatch.setenv("DAPHNE_CLOSE_HANDSHAKE_TIMEOUT", "1.5")
    assert close_handshake_timeout() == 1.5
