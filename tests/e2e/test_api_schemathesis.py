"""A bounded schemathesis run against a live daphne node with a real token: no request the
schema allows (or that a fuzzer derives from it) gets a 5xx, and every documented answer
matches the schema (docs/openapi.yaml, served at /api/schema/)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from channels.db import database_sync_to_async

from tests.conftest import access_for
from tests.support.sdk_chat import wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Per operation and phase: about 150 requests in all (~20-40 s on a loaded 2-core machine).
MAX_EXAMPLES = 5


async def test_no_5xx_and_schema_conformant_answers(daphne_cluster, user, tmp_path):
    node = daphne_cluster("schema-node", API_THROTTLE_TOKEN_IP="100000/min",
                          API_THROTTLE_TOKEN_USERNAME="100000/min", API_THROTTLE_CONVERSATIONS="100000/min")
    await wait_ready(node)
    token = await database_sync_to_async(access_for)(user)
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"http://127.0.0.1:{node.port}/api/schema/",
        "--header", f"Authorization: Bearer {token}",
        "--checks", "not_a_server_error,response_schema_conformance,content_type_conformance",
        "--max-examples", str(MAX_EXAMPLES), "--seed", "20261128", "--generation-database", "none",
        "--phases", "examples,coverage,fuzzing", "--workers", "1", "--request-timeout", "10",
        "--report-dir", str(tmp_path), "--no-color",
    ]
    result = await _run(command, tmp_path)
    assert result.returncode == 0, f"{result.stdout[-6000:]}\n--- node ---\n{node.tail()}"
    assert "No issues found" in result.stdout or " passed" in result.stdout, result.stdout[-3000:]


async def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    import asyncio

    return await asyncio.to_thread(
        subprocess.run, command, cwd=cwd, capture_output=True, text=True, timeout=240,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
