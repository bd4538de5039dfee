"""One server node's long-lived parts: its identity, its run supervisor, its open sockets.

The node reaches its sockets only through `NodeConnection`: the fan-out hands them news, the
resync reads and answers them in bulk, the drain sends them away. Nothing else of a consumer
is the node's business."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any, Protocol

from channels.layers import get_channel_layer
from django.conf import settings

from realtime.core import metrics
from realtime.fanout.hub import FanoutHub
from realtime.fanout.kick import RUN_KICK_GROUP, kick_workers
from realtime.infra import registry
from realtime.infra.group_call import GroupCall
from realtime.infra.outage import REDIS
from realtime.infra.transient import warn_failed
from realtime.node import liveness
from realtime.node.resync import UnclosedRow, resync_forever
from realtime.runs.supervisor import RunSupervisor
from sessions_app import services

log = logging.getLogger(__name__)

class NodeConnection(Protocol):
    """What the node may call on one of its sockets (realtime.connection.consumer.ConversationConsumer)."""

    channel_name: str  # the socket's address: control messages name it

    def live(self, message: dict) -> None:
        """Fan-out: committed events of the socket's conversation (or their highest seq)."""

    def lost_live_feed(self) -> None:
        """Fan-out: announcements may have been lost; read the log to its end."""

    def control(self, action: str) -> None:
        """Fan-out: another socket or an operator ends this one (`replaced`, `disconnect`)."""

    def resync_entry(self) -> tuple[str, int, int] | None:
        """Resync: (connection id, delivered seq, acked seq), None while not ready."""

    def resync_slot(self) -> tuple[str, str] | None:
        """Resync: the connection slot to renew, (scope, identity)."""

    def resynced(self, state: str, last_seq: int, acked_stored: int) -> None:
        """Resync: what services.touch_connections found for this socket."""

    async def go_away(self, retry_after_ms: int = 0) -> None:
        """Drain: `reconnect` then 4012."""


class NodeRuntime:
    def __init__(
        self,
        node_id: str | None = None,
        *,
        run_agents: bool | None = None,
        ws_url: str | None = None,
        register: bool = True,
        **supervisor_options: Any,
    ):
        self.node_id = node_id or settings.REALTIME_NODE_ID
        self.ws_url = ws_url or settings.REALTIME_PUBLIC_WS_URL
        self.register = register
        # Set on SIGTERM (realtime.server.drain): new sockets are sent away, /readyz answers 503.
        self.draining = False
        # Checked before every announce: a heartbeat stuck in a thread-bound DB call may outlive
        # its cancellation, and one late announce would keep a dead node in discovery.
        self._stopped = False
        run_agents = settings.REALTIME_RUN_AGENTS_IN_SERVER if run_agents is None else run_agents
        self.supervisor = RunSupervisor(self.node_id, **supervisor_options) if run_agents else None
        # Weak so a consumer that vanished without cleanup (killed app instance) is not kept alive.
        self.connections: weakref.WeakSet[NodeConnection] = weakref.WeakSet()
        # Rows of closed sockets whose close failed (realtime.node.resync.UnclosedRow): the
        # resync closes them once the database answers.
        self.unclosed_rows: list[UnclosedRow] = []
        self.fanout = FanoutHub()
        # The messages its sockets post: those that arrive while others are being stored go in
        # one statement together (a burst of 500 was 500 database calls).
        # Half the database threads at most for one burst (the other calls keep theirs); one
        # conversation's messages go in one call, in their order.
        self.posts = GroupCall(self._post_messages, parallel=max(1, settings.REALTIME_DB_THREADS // 2),
                               key=lambda message: message.conversation_id)
        # The acks its sockets store: those that come while others are being stored go in one
        # call (services.record_acks says why).
        self.acks = GroupCall(self._record_acks)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick_listener: asyncio.Task | None = None
        self._heartbeat: asyncio.Task | None = None
        self._reaping: asyncio.Task | None = None
        self._resync: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    @staticmethod
    def _record_acks(acks: list[services.AckWrite]) -> list[None]:
        return services.record_acks(acks)

    @staticmethod
    def _post_messages(messages: list[services.NewMessage]) -> list[services.PostedMessage | Exception]:
        return services.post_user_messages(messages)

    def ensure_started(self) -> None:
        """Starts background work in the running loop; idempotent (daphne has no lifespan)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop = loop
        if self.supervisor is not None:
            self.supervisor.start()
        if self.register:
            self._heartbeat = loop.create_task(self._keep_alive())
        self._resync = loop.create_task(resync_forever(self), name="resync")
        metrics.watch_node(self.node_id, lambda: len(self.connections))
        metrics.watch_approvals(services.approvals_waiting)

    async def _keep_alive(self) -> None:
        """Announces this node every TTL/3 and reaps nodes that stopped announcing.

        After this node could not announce (Redis unreachable from here), it reaps nobody for
        one TTL: every entry it finds went stale during the same outage, and a live node needs
        a heartbeat to refresh its own. Without that pause, after a 30 s partition of Redis the
        first node back took the others for dead and closed the rows of their open sockets
        (issue 25)."""
        last_reap = 0.0
        reap_from = 0.0  # loop time before which this node reaps nobody
        unannounced = False  # the last announce failed
        loop = asyncio.get_running_loop()
        while not self._stopped:
            try:
                await registry.announce(self.node_id, self.ws_url, self.draining)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis blip: retry at the next beat; warn_failed logs a bug's traceback
                unannounced = True
                # The heartbeat is the node's probe of Redis: an outage is logged once
                # (realtime/infra/outage.py), and the failures it causes meanwhile not at all.
                REDIS.failed(exc)
                warn_failed(log, "node heartbeat failed", exc=exc)
            else:
                REDIS.succeeded()
                if unannounced:
                    unannounced = False
                    reap_from = loop.time() + settings.REALTIME_NODE_TTL
                reaping = self._reaping is not None and not self._reaping.done()
                if not reaping and loop.time() >= reap_from and \
                        loop.time() - last_reap >= settings.REALTIME_NODE_REAP_INTERVAL:
                    last_reap = loop.time()
                    # Beside the heartbeat, not in it: the reap waits for the database, and a
                    # heartbeat that waited with it (up to REALTIME_DB_TIMEOUT per call while the
                    # database was out) let this node's entry go stale, and the other nodes
                    # reaped a live node once the database was back (issue 25).
                    self._reaping = loop.create_task(self._reap(), name="reap")
            await asyncio.sleep(min(settings.REALTIME_NODE_TTL / 3, settings.REALTIME_NODE_REAP_INTERVAL))

    async def _reap(self) -> None:
        try:
            result = await liveness.reap_dead_nodes(self.node_id)
        except Exception as exc:  # noqa: BLE001 - Redis or DB blip: the next beat retries; warn_failed logs a bug's traceback
            warn_failed(log, "reaping dead nodes failed", exc=exc)
            return
        if result.runs_released and self.supervisor is not None:
            self.supervisor.sweep_now()

    def spawn(self, coro: Any) -> None:
        """Runs a short piece of work for one socket without blocking the caller."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def kick(self, conversation_id: str) -> None:
        # Without a supervisor, agent workers listen on RUN_KICK_GROUP (realtime/fanout/kick.py):
        # a web node hands a new run over at once instead of waiting for a worker's next sweep.
        if self.supervisor is not None:
            self.supervisor.kick(conversation_id)
            return
        task = asyncio.get_running_loop().create_task(self._kick_workers(conversation_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _kick_workers(self, conversation_id: str) -> None:
        await kick_workers(conversation_id)  # best effort: the workers' sweep finds the run anyway

    def listen_for_kicks(self) -> None:
        """For agent workers: claim runs as soon as a web node announces them."""
        if self.supervisor is not None and self._kick_listener is None:
            self._kick_listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        layer = get_channel_layer()
        # The default prefix shares the process-wide receive loop; another prefix would starve
        # behind the consumers' blocking receive.
        channel = await layer.new_channel()
        await layer.group_add(RUN_KICK_GROUP, channel)
        try:
            while True:
                try:
                    message = await layer.receive(channel)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - Redis blip: back off, the sweep covers the gap
                    warn_failed(log, "run kick listener failed", exc=exc)
                    await asyncio.sleep(1)
                    # Inside the guard: a Redis still out must not end the listener for good.
                    with contextlib.suppress(Exception):
                        await layer.group_add(RUN_KICK_GROUP, channel)
                    continue
                if message.get("type") == "runs.kick" and self.supervisor is not None:
                    self.supervisor.kick(str(message["conversation_id"]))
        finally:
            with contextlib.suppress(Exception):  # group membership expires in Redis
                await asyncio.shield(layer.group_discard(RUN_KICK_GROUP, channel))

    def cancel_local_run(self, run_id: str) -> None:
        if self.supervisor is not None:
            self.supervisor.cancel_local_run(run_id)

    async def stop(self, *, abandon: bool = False, grace: float = 0.0) -> None:
        """`abandon` stops like a crash (nothing is written, leases and the registry entry
        lapse); otherwise the node leaves discovery first and releases what it held."""
        self._stopped = True
        metrics.unwatch_node(self.node_id)
        if self._heartbeat is not None:
            await _cancel(self._heartbeat)
            self._heartbeat = None
            if self._reaping is not None:
                await _cancel(self._reaping)
                self._reaping = None
            if not abandon:
                try:
                    await registry.withdraw(self.node_id)
                except Exception:  # the entry expires by itself
                    log.warning("leaving discovery failed", exc_info=True)
        if self._resync is not None:
            await _cancel(self._resync)
            self._resync = None
        if self._kick_listener is not None:
            await _cancel(self._kick_listener)
            self._kick_listener = None
        if self.supervisor is not None:
            await self.supervisor.stop(abandon=abandon, grace=grace)
        await self.fanout.stop()


async def _cancel(task: asyncio.Task, timeout: float = 2.0) -> None:
    """Cancels a background task; a Redis call that ignores cancellation must not hold
    shutdown hostage, so the wait is bounded."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        log.warning("background task %s did not stop within %ss", task.get_name(), timeout)
