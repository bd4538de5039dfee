"""The Debian programs some tests run for real (haproxy, pgbouncer): found (or the test skips
outside CI and fails under CI=true, where .ci/run installs them with apt-get), waited for until
they listen, and stopped."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def installed_or_skip(name: str) -> str:
    """The executable `name` (on PATH or in /usr/sbin). Outside CI a machine without it skips;
    under CI=true its absence is a failure, never a skip."""
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is not installed (.ci/run installs it with apt-get)")
    pytest.skip(f"{name} is not installed: apt-get install -y {name}")


def wait_listening(proc: subprocess.Popen, port: int, timeout: float, tail: Callable[[], str]) -> None:
    """Returns once something accepts on 127.0.0.1:`port`; raises with `tail()` (the program's
    log) if `proc` exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}):\n{tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout:g}s:\n{tail()}")


def stop_process(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout` seconds; reaped either way."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
