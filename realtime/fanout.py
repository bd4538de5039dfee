"""Live fan-out through the channel layer. The layer is at-most-once and not durable: it only
tells consumers that committed events exist; they fill any gap from the event log."""

from __future__ import annotations

import logging

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

# Events larger than this travel as a bare notification; the consumer reads them from the log.
INLINE_LIMIT_BYTES = 16 * 1024


def group_name(conversation_id: str) -> str:
    return f"conv.{conversation_id}"


def _text_size(event: dict) -> int:
    # Text dominates an event's size (the other fields are ids and small numbers), so this
    # bound avoids serialising every delta just to measure it.
    message = event.get("message")
    return len(event.get("text") or "") + (len(message.get("text") or "") if isinstance(message, dict) else 0)


def layer_message(events: list[dict]) -> dict:
    upto = events[-1]["seq"]
    if sum(_text_size(e) for e in events) * 4 > INLINE_LIMIT_BYTES:
        return {"type": "conv.events", "events": None, "upto": upto}
    return {"type": "conv.events", "events": events, "upto": upto}


async def publish(conversation_id: str, events: list[dict]) -> None:
    """Best effort: the events are already committed, so a failure here only delays them
    until the consumers' periodic resync."""
    if not events:
        return
    try:
        await get_channel_layer().group_send(group_name(conversation_id), layer_message(events))
    except Exception:  # noqa: BLE001 - Redis down must not fail a committed write
        log.warning("fan-out of %s events for %s failed", len(events), conversation_id, exc_info=True)
