"""LOG_FORMAT=json: a real node logs one JSON object per line, and the lines about a
connection and a run carry node, conversation_id, connection_id, client_id, run_id, seq and
close_code."""

import json
from pathlib import Path

import pytest
from channels.db import database_sync_to_async

from tests.conftest import access_for
from tests.support.sdk_chat import wait_ready
from tests.support.waiting import eventually
from tests.support.ws_e2e import E2EClient

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def test_json_lines_carry_the_ids(daphne_cluster, user):
    node = daphne_cluster("json-node", LOG_FORMAT="json", LOG_LEVEL="INFO", REALTIME_DEMO_AGENT_DELAY_MS=5)
    await wait_ready(node)
    token = await database_sync_to_async(access_for)(user)
    client = E2EClient(token, client_id="tab-json-1")
    ready = await client.connect(node.ws_url)
    await client.message("hello logs")
    started = await client.until(lambda f: f["type"] == "agent.started")
    done = await client.until(lambda f: f["type"] == "agent.completed")
    await client.ws.close()

    def records() -> list[dict]:
        node.log.flush()
        lines = [line for line in Path(node.log.name).read_text().splitlines() if line.strip()]
        return [json.loads(line) for line in lines]  # every line is one JSON object

    def closed():
        return [r for r in records() if r["message"].startswith("connection closed")]

    [close] = await eventually(lambda: _now(closed()), timeout=10, what="the close logged")
    logged = records()
    assert all(r["node"] == "json-node" and {"time", "level", "logger"} <= r.keys() for r in logged), logged[:3]
    conversation = ready["conversation_id"]
    [opened] = [r for r in logged if r["message"] == "connection ready"]
    assert opened["conversation_id"] == conversation and opened["seq"] == 0 and opened["connection_id"]
    assert (opened["client_id"], opened["replay_count"], opened["resumed"]) == ("tab-json-1", 0, False)
    assert (close["close_code"], close["connection_id"], close["conversation_id"], close["client_id"]) == (
        1000, opened["connection_id"], conversation, "tab-json-1")
    assert "cause" not in close  # a normal close needs no explanation
    assert close["seq"] == done["seq"]
    run_lines = [r for r in logged if r["message"].startswith("run ")]
    assert [r["message"] for r in run_lines] == ["run claimed", "run ended: completed"]
    assert all(r["run_id"] == started["run_id"] and r["conversation_id"] == conversation for r in run_lines)
    # The run was kicked by the socket's message, but it is not the socket's: no connection_id.
    assert all("connection_id" not in r for r in run_lines), run_lines


async def _now(value):
    return value
