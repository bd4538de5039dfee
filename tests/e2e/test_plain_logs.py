"""Plain logs (the default LOG_FORMAT) carry what the JSON lines carry, compactly (issue 23,
item 6): `connection ready` names the node, conversation, client_id and connection, and a 2 MB
frame that daphne refused with 1009 is logged with that code and its cause, not as a bare
`connection closed: connection_lost`."""

import asyncio
import json
import re
from pathlib import Path

import pytest
import websockets
from channels.db import database_sync_to_async

from tests.conftest import access_for
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def test_a_refused_2_mb_frame_is_logged_with_its_ids_code_and_cause(daphne_cluster, user):
    node = daphne_cluster("plain-node", LOG_LEVEL="INFO")
    token = await database_sync_to_async(access_for)(user)
    ws = await websockets.connect(node.ws_url, open_timeout=10, max_size=None)
    try:
        await ws.send(json.dumps({"type": "connect", "token": token, "conversation_id": None,
                                  "last_seq": None, "client_id": "tab-7f3a"}))
        ready = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert ready["type"] == "ready", ready
        with pytest.raises(websockets.ConnectionClosed):
            await ws.send('{"type":"message","text":"' + "x" * 2_000_000 + '"}')
            await asyncio.wait_for(ws.recv(), 20)
        await asyncio.wait_for(ws.wait_closed(), 20)
        assert ws.protocol.close_rcvd.code == 1009
    finally:
        ws.transport.abort()

    def lines() -> list[str]:
        node.log.flush()
        return Path(node.log.name).read_text(errors="replace").splitlines()

    closed = await eventually(lambda: _now([line for line in lines() if "connection closed" in line]),
                              timeout=10, what="the close logged")
    [opened] = [line for line in lines() if " connection ready " in line + " "]
    conversation, short = ready["conversation_id"], ready["conversation_id"][:8]
    facts = re.search(r"\[(.*)\]$", opened).group(1)
    assert facts.startswith(f"node=plain-node conv={short} client=tab-7f3a conn="), opened
    assert "seq=0" in facts and conversation not in opened, opened  # compact: 8 characters of a uuid
    connection = re.search(r"conn=(\w+)", facts).group(1)
    [close] = closed
    assert "connection closed: connection_lost (1009: message too big: daphne refused a frame over" in close, close
    assert close.endswith(f"[node=plain-node conv={short} client=tab-7f3a conn={connection} seq=0 code=1009]"), close


async def _now(value):
    return value
