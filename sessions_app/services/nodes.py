"""Node bookkeeping: which nodes hold open rows, and releasing what a dead node held."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from sessions_app.models import AgentRun, Connection


def open_connection_nodes_not_in(live_nodes: set[str], older_than_seconds: float) -> list[str]:
    """Nodes holding open connection rows that are not in the live set (grace for new nodes)."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return sorted(
        set(
            Connection.objects.filter(closed_at__isnull=True, opened_at__lt=cutoff)
            .exclude(node__in=live_nodes)
            .values_list("node", flat=True)
            .distinct()
        )
    )


@dataclass(frozen=True)
class NodeRelease:
    connections_closed: int
    runs_released: int
    # (user id, client_id, conversation id, channel name) of the closed rows: the connection
    # slots the dead node's sockets held and can no longer release. Released only while that
    # socket still owns its slot (realtime.infra.ratelimit.release_slot): a client that came back
    # elsewhere took its slot over first.
    orphan_slots: list[tuple[str, str, str, str]]


def release_node(node: str) -> NodeRelease:
    """Everything a dead node held: its open connection rows are closed (1006, node_lost) and
    its running runs' leases expire now so a live node continues them at its next sweep."""
    with transaction.atomic():
        rows = list(
            Connection.objects.select_for_update()
            .filter(node=node, closed_at__isnull=True)
            .values_list("pk", "user_id", "client_id", "conversation_id", "channel_name")
        )
        closed = Connection.objects.filter(pk__in=[row[0] for row in rows]).update(
            closed_at=timezone.now(), close_code=1006, close_reason="node_lost"
        )
    released = AgentRun.objects.filter(node=node, status=AgentRun.Status.RUNNING).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    orphans = sorted((str(user), client, str(conv), channel) for _, user, client, conv, channel in rows)
    return NodeRelease(connections_closed=closed, runs_released=released, orphan_slots=orphans)
