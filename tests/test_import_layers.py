"""The layers of the code hold (issue 20): each package imports only the layers below it, and
the pure modules import no I/O (the contracts in `.importlinter`; docs/architecture.md,
"Layers"). CI runs `lint-imports` too; this test makes `make test` catch an upward import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pure

ROOT = Path(__file__).resolve().parents[1]


def test_every_import_contract_is_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
