"""The periodic resync of every socket of a node, in batches.

Each socket must, every REALTIME_RESYNC_INTERVAL: store its progress (delivered and acked
seq) if it made any, learn whether its row was closed by someone else (replaced, reaped),
whether its user was deactivated or its refresh token revoked, catch events the at-most-once
fan-out dropped, and renew its connection slot. Done per socket that was a few database and
Redis round trips each, which at 5,000 idle sockets kept a node's core busy (measured: 96% CPU
at idle, sockets timing out). Batched, it is two reads, at most one write and one Redis
command (the slots' renewal, one Lua call) per thousand sockets; an idle socket's row is not
written at all (issue 22, services.touch_connections).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings

from realtime.infra import ratelimit
from realtime.infra.db import db
from realtime.infra.transient import warn_failed
from sessions_app import services

if TYPE_CHECKING:
    from realtime.node.runtime import NodeRuntime

log = logging.getLogger(__name__)

BATCH = 1000


@dataclass(frozen=True)
class UnclosedRow:
    """A closed socket's connection row that could not be closed then (the database was out):
    the node's resync closes it. Before (issue 25) such a row stayed open for as long as its
    live node ran, since the reaper closes only the rows of dead nodes."""

    connection_id: str
    conversation_id: str | None
    ack: int | None  # the socket's last ack not yet stored
    code: int | None
    reason: str
    sent_seq: int


async def close_row(row: UnclosedRow) -> None:
    if row.ack is not None:
        await db(services.record_ack)(row.connection_id, row.conversation_id, row.ack)
    await db(services.close_connection)(row.connection_id, row.code, row.reason, row.sent_seq)


async def resync_forever(node: NodeRuntime) -> None:
    while True:
        await asyncio.sleep(settings.REALTIME_RESYNC_INTERVAL)
        try:
            await resync_once(node)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a database or Redis blip: the next round retries; warn_failed logs a bug's traceback
            warn_failed(log, "resync failed; the next round retries", exc=exc)


async def resync_once(node: NodeRuntime) -> None:
    while node.unclosed_rows:
        await close_row(node.unclosed_rows[0])  # a failure leaves it for the next round
        node.unclosed_rows.pop(0)
    lease = ratelimit.slot_lease(settings.REALTIME_RESYNC_INTERVAL, settings.REALTIME_HEARTBEAT_TIMEOUT)
    pairs = [(c, e) for c in list(node.connections) if (e := c.resync_entry()) is not None]
    for start in range(0, len(pairs), BATCH):
        chunk = pairs[start : start + BATCH]
        found = await db(services.touch_connections)([e for _, e in chunk])
        slots = []
        for socket, (connection_id, _, acked) in chunk:
            state, last_seq = found[connection_id]
            if state == "ok" and (slot := socket.resync_slot()) is not None:
                slots.append(slot)
            socket.resynced(state, last_seq, min(acked, last_seq))
        try:
            await ratelimit.renew_slots(slots, lease)
        except Exception as exc:  # noqa: BLE001 - limits fail open, the next round renews; warn_failed logs a bug's traceback
            warn_failed(log, "renewing connection slots failed", exc=exc)
