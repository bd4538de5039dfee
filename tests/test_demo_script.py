"""`make demo` (scripts/demo.sh) with its port taken says so and how to choose another, before
it touches the database or Redis, instead of daphne's CRITICAL "Address already in use" after
a banner that claims the server is starting."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pure

ROOT = Path(__file__).resolve().parents[1]


def test_a_taken_port_is_refused_with_the_next_one_as_a_hint():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PORT": str(port), "VENV": sys.prefix, "REDIS_URL": "redis://127.0.0.1:1/0"}
        result = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr
    assert f"PORT={port + 1} make demo" in result.stderr
    assert "Tether is starting" not in result.stdout
