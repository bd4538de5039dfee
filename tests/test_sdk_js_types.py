"""The JavaScript client's types: its JSDoc type-checks under `tsc --strict` (checkJs), the
committed `clients/js/src/tether-client.d.ts` is exactly what that JSDoc declares (regenerate
with `npm --prefix clients/js run types`), and the issue's minimum API compiles against it
(`clients/js/test/types/usage.ts`). TypeScript is the one dev dependency of clients/js
(`npm ci --prefix clients/js`, done by `make install-dev` (and so `make test`) and `.ci/run`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.tools import missing, node_or_skip

pytestmark = pytest.mark.pure  # Node and tsc only: no server, Redis or database

JS = Path(__file__).resolve().parents[1] / "clients" / "js"
TSC = JS / "node_modules" / "typescript" / "bin" / "tsc"


def tsc(node: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([node, str(TSC), *args], cwd=JS, capture_output=True, text=True, timeout=170, check=False)


def test_the_committed_declarations_are_the_checked_jsdoc(tmp_path):
    node = node_or_skip()
    if not TSC.exists():
        missing("TypeScript is not installed in clients/js (npm ci --prefix clients/js)")
    emitted = tsc(node, "-p", "tsconfig.json", "--outDir", str(tmp_path))
    assert emitted.returncode == 0, f"the JSDoc does not type-check:\n{emitted.stdout}{emitted.stderr}"
    generated = (tmp_path / "tether-client.d.ts").read_text()
    committed = (JS / "src" / "tether-client.d.ts").read_text()
    assert generated == committed, "src/tether-client.d.ts is stale: run `npm --prefix clients/js run types`"

    usage = tsc(node, "-p", "test/types/tsconfig.json")
    assert usage.returncode == 0, f"the minimum API does not compile against the .d.ts:\n{usage.stdout}{usage.stderr}"
