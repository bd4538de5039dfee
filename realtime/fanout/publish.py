"""Publishing on the fan-out: committed events and control messages, through Redis pub/sub.

Pub/sub is at-most-once and not durable, like the channel layer: a publish only tells the
nodes that committed events exist; their sockets fill any gap from the event log, and a
periodic resync catches whatever a Redis outage swallowed. The receiving side is
realtime/fanout/hub.py.

Rule: realtime code commits events only through `commit_and_publish` (or `publish_committed`
for a result obtained otherwise); a committed event that is never published is not lost, but
its sockets see it only at their next resync.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from realtime.core.wire import encode_frame
from realtime.infra.db import db
from realtime.infra.redis_client import get_pipeline, key
from realtime.infra.resp import Script
from realtime.infra.transient import warn_failed

log = logging.getLogger(__name__)

T = TypeVar("T")

# Frames larger than this (in all) travel as a bare notification; sockets read them from the log.
INLINE_LIMIT_BYTES = 16 * 1024


class Committing(Protocol):
    """A service result that committed events to one conversation's log."""

    conversation_id: str
    events: list[dict]


def channel_for(conversation_id: str) -> str:
    return key("conv", str(conversation_id))


def layer_message(events: list[dict]) -> dict:
    """The pub/sub message announcing committed events: their wire frames, encoded once here
    for every socket of every node (a socket sends the text as it is), or, when they are large,
    only the highest seq (the sockets read them from the log)."""
    upto = events[-1]["seq"]
    frames = [encode_frame(e) for e in events]
    if sum(len(text) for _, text in frames) > INLINE_LIMIT_BYTES:
        return {"type": "conv.events", "frames": None, "upto": upto}
    return {"type": "conv.events", "frames": frames, "upto": upto}


async def commit_and_publish(write: Callable[..., T], *args: Any) -> T:
    """Runs a service write that commits events (in a database thread) and publishes them.

    Rule: realtime code commits events only through here or `publish_committed` (for results
    obtained otherwise: a claim awaited under a shield, the delta group commit). A committed
    event that is never published is not lost (the log has it), but its sockets would only
    see it at their next resync, seconds later."""
    result = await db(write)(*args)
    await publish_committed(result)
    return result


async def publish_committed(result: Committing) -> None:
    await publish(result.conversation_id, result.events)


async def publish(conversation_id: str, events: list[dict]) -> None:
    """Best effort: the events are already committed, so a failure here only delays them
    until the consumers' periodic resync."""
    if not events:
        return
    try:
        # `ts`: when it was published, for the receiving nodes' fan-out lag metric.
        message = {**layer_message(events), "ts": time.time()}
        await get_pipeline().call("PUBLISH", channel_for(conversation_id), json.dumps(message))
    # Redis down must not fail a committed write; warn_failed logs a bug's traceback.
    except Exception as exc:  # noqa: BLE001 - see above
        warn_failed(log, "fan-out of %s events for %s failed", len(events), conversation_id, exc=exc)


# Control messages: what one socket or the admin tells other sockets of a conversation.
# `replaced`: a newer socket of the same (conversation, client_id) took over (4409).
# `disconnect`: an operator ended the socket (going_away, 4012: the client resumes).
CONTROL_ACTIONS = ("replaced", "disconnect")


def control_message(action: str, addresses: list[str]) -> str:
    """The pub/sub message telling the sockets named `addresses` (their `channel_name`) of a
    conversation to end; published on the conversation's channel, where they listen."""
    if action not in CONTROL_ACTIONS:
        raise ValueError(f"unknown control action {action!r}; one of {CONTROL_ACTIONS}")
    return json.dumps({"type": "conn.control", "action": action, "to": list(addresses)})


async def tell(conversation_id: str, action: str, addresses: list[str]) -> None:
    """Best effort, like the events: a socket that misses it learns the same from its row at
    its next resync (the row was closed before this is sent)."""
    if not addresses:
        return
    try:
        await get_pipeline().call("PUBLISH", channel_for(conversation_id), control_message(action, addresses))
    # Redis down: the resync ends the sockets; warn_failed logs a bug's traceback.
    except Exception as exc:  # noqa: BLE001 - see above
        warn_failed(log, "telling %s sockets of %s to end (%s) failed", len(addresses), conversation_id, action,
                    exc=exc)


# One command for a whole batch: PUBLISH each conversation's message. A pipeline of one PUBLISH
# per conversation cost the node more than the batch's commit (issue 22's profile: 15% of the
# node's CPU per event at 100 streams, the client's packing and parsing of a reply per
# command); a script is one command and one reply. Channels are passed as KEYS, as Redis asks
# of anything a script touches.
PUBLISH_EACH = Script("""
for i = 1, #KEYS do
    redis.call('PUBLISH', KEYS[i], ARGV[i])
end
return #KEYS
""")


async def publish_many(batches: list[tuple[str, list[dict]]]) -> None:
    """Publishes several conversations' events in one command (the delta group commit). Best
    effort, like `publish`."""
    batches = [(c, e) for c, e in batches if e]
    if not batches:
        return
    try:
        now = time.time()
        await get_pipeline().eval(
            PUBLISH_EACH,
            [channel_for(conversation_id) for conversation_id, _ in batches],
            [json.dumps({**layer_message(events), "ts": now}) for _, events in batches],
        )
    # Redis down must not fail committed writes; warn_failed logs a bug's traceback.
    except Exception as exc:  # noqa: BLE001 - see above
        warn_failed(log, "fan-out of %s conversations failed", len(batches), exc=exc)
