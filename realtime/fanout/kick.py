"""Telling agent workers (`manage.py run_agents`) that a run of a conversation became claimable,
so that one claims it now rather than at its next sweep. Used by web nodes that run no agents
themselves (realtime.node.runtime) and by the admin's approval actions.

Over the channel layer group `tether.runs.kick`, at most once like every layer message: a lost
kick only delays the run until a supervisor's sweep (`REALTIME_RUN_SWEEP_INTERVAL`) finds it.
Nodes that run agents in the server (`REALTIME_RUN_AGENTS_IN_SERVER=1`) do not listen here:
their sweep finds the run.
"""

from __future__ import annotations

import logging

from channels.layers import get_channel_layer

from realtime.infra.transient import warn_failed

log = logging.getLogger(__name__)

# Agent workers listen here (realtime.node.runtime.NodeRuntime.listen_for_kicks).
RUN_KICK_GROUP = "tether.runs.kick"


def kick_message(conversation_id: str) -> dict:
    return {"type": "runs.kick", "conversation_id": str(conversation_id)}


async def kick_workers(conversation_id: str) -> None:
    """Best effort: the workers' sweep finds the run anyway."""
    try:
        await get_channel_layer().group_send(RUN_KICK_GROUP, kick_message(conversation_id))
    except Exception as exc:  # noqa: BLE001 - a Redis blip, the sweep covers it; warn_failed logs a bug's traceback
        warn_failed(log, "kicking agent workers failed", exc=exc)
