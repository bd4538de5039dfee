"""The Debian programs some tests run for real (haproxy, pgbouncer): found, or the test skips
outside CI and fails under CI=true, where .ci/run installs them with apt-get."""

from __future__ import annotations

import os
import shutil
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
