"""The node's process freezes what it loaded at its start before it serves (issue 22): full
garbage collections then walk only what the sockets and runs make, not Django and the apps.
Measured with 500 streams: full collections of 44-74 ms each, 12-29 ms frozen."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from realtime.serve import freeze_startup_heap

ROOT = Path(__file__).resolve().parent.parent

# `python -m realtime.serve`'s main() up to the moment daphne would start serving.
PROBE = """
import gc
from realtime import serve
from realtime.server import daphne_server

def run(self, args):
    print(gc.get_freeze_count(), flush=True)

daphne_server.TetherCommandLineInterface.run = run
serve.main([])
"""


def test_the_node_serves_with_its_start_frozen():
    env = {**os.environ, "SECRET_KEY": "k" * 50, "JWT_SIGNING_KEY": "j" * 50, "PYTHONPATH": str(ROOT),
           "DJANGO_SETTINGS_MODULE": "project.settings"}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    frozen = int(done.stdout.split()[0])
    assert frozen > 50_000, done.stdout  # Django, the apps and the node: hundreds of thousands


@pytest.mark.pure
def test_freezing_moves_what_is_alive_out_of_the_collections_sight():
    try:
        kept = [object() for _ in range(1000)]
        frozen = freeze_startup_heap()
        assert frozen >= len(kept)
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
