"""Graceful drain of a daphne node on SIGTERM.

Daphne on SIGTERM cancels every application instance without `disconnect()`; clients see
1006 and must guess. Instead, the first SIGTERM: leaves discovery and turns /readyz red,
refuses new sockets (`reconnect` frame then 4012), tells every open socket to reconnect
elsewhere (`reconnect` then 4012), lets agent runs finish for up to the grace period and
releases the rest so another node continues them at once, then stops the reactor. A second
SIGTERM (or SIGINT) or the grace period running out forces the exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings

from realtime.core import metrics
from realtime.infra import registry
from realtime.node.runtime import NodeRuntime

log = logging.getLogger(__name__)


# Seconds the node may take to stop after the runs' grace (cancelling, releasing leases, leaving
# the live feed: normally well under one). Past it the process exits anyway: a drain must end.
STOP_LIMIT = 5.0
# Seconds daphne's own shutdown may take after the drain (it waits for every application
# instance to end). We found a drained node still up 15 s after "drain: done" in a loaded full
# run: its sockets were already moved and its runs released, only that wait remained. A normal
# shutdown took up to 2.9 s after the drain in loaded end-to-end runs, hence 8. The bound is
# kept by a thread, not by the event loop: it happened again (issue 25's five runs) with the
# loop's timer in place, the reactor having stopped the loop while the interpreter's exit still
# waited for threads (the database threads are joined at exit).
SHUTDOWN_LIMIT = 8.0


def describe_tasks(limit: int = 30, loop: asyncio.AbstractEventLoop | None = None) -> str:
    """Every pending task of the loop with where it waits (its innermost frame)."""
    lines = []
    for task in list(asyncio.all_tasks(loop))[:limit]:
        stack = task.get_stack(limit=1)
        where = f"{stack[-1].f_code.co_filename}:{stack[-1].f_lineno}" if stack else "?"
        lines.append(f"  {task.get_name()} {task.get_coro().__qualname__} at {where}")
    return "\n".join(lines)


def describe_threads() -> str:
    """Every thread with where it is (its innermost frame): what a process that cannot exit
    waits for."""
    names = {t.ident: t.name for t in threading.enumerate()}
    lines = []
    for ident, frame in sys._current_frames().items():  # noqa: SLF001 - the stdlib's only way to see them
        code = frame.f_code
        lines.append(f"  {names.get(ident, ident)} at {code.co_filename}:{frame.f_lineno} ({code.co_name})")
    return "\n".join(lines)


class Drainer:
    def __init__(self, node: NodeRuntime, grace: float, stop_server: Any, close_timeout: float = 5.0,
                 exit_process: Callable[[int], Any] | None = None):
        self.node = node
        self.grace = grace
        self.stop_server = stop_server  # reactor.stop: daphne then cancels what is left
        # os._exit on daphne: ends a process whose server shutdown outlasts SHUTDOWN_LIMIT after
        # the drain. None (in-process tests): no such bound.
        self.exit_process = exit_process
        self.close_timeout = close_timeout
        self.task: asyncio.Task | None = None
        self.started_at: float | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Replaces Twisted's handlers; must run inside the reactor's running loop."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_signal, sig)

    def on_signal(self, sig: int) -> None:
        if self.task is None:
            log.warning("%s: draining (grace %.0f s); send it again to force the exit",
                        signal.Signals(sig).name, self.grace)
            self.task = asyncio.get_running_loop().create_task(self.drain())
            return
        log.warning("%s during drain: exiting now", signal.Signals(sig).name)
        self.force_exit()

    def force_exit(self) -> None:
        self.stop_server()
        # If the reactor cannot stop (an instance that ignores cancellation), do not hang.
        asyncio.get_running_loop().call_later(self.close_timeout, os._exit, 1)

    async def drain(self) -> None:
        self.started_at = time.monotonic()
        deadline = asyncio.get_running_loop().time() + self.grace
        self.node.draining = True
        try:
            try:
                await asyncio.wait_for(
                    registry.announce(self.node.node_id, self.node.ws_url, draining=True), self.close_timeout
                )
            except Exception:  # Redis down: the entry lapses by its TTL anyway
                log.warning("could not mark the node draining in discovery", exc_info=True)
            closed = await self.close_sockets()
            moved = time.monotonic() - self.started_at
            metrics.DRAIN_SECONDS.labels("sockets").set(moved)
            log.warning("drain: told %d sockets to reconnect after %.2f s", closed, moved,
                        extra={"drain_phase": "sockets", "duration_seconds": moved})
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            stopping = asyncio.ensure_future(self.node.stop(grace=remaining))
            await asyncio.wait({stopping}, timeout=remaining + STOP_LIMIT)
            if not stopping.done():
                # The process must exit all the same; say what is stuck, for the next look.
                log.error("drain: the node did not stop within %g s after the grace; exiting. Tasks:\n%s",
                          STOP_LIMIT, describe_tasks())
                stopping.cancel()
            total = time.monotonic() - self.started_at
            metrics.DRAIN_SECONDS.labels("total").set(total)
            log.warning("drain: done after %.2f s", total, extra={"drain_phase": "total", "duration_seconds": total})
        except Exception:  # whatever failed, the process must still exit
            log.exception("drain failed; exiting")
        self.stop_server()
        if self.exit_process is not None:
            # A daemon thread: it fires whether the loop still runs or not, and keeps nothing
            # alive. A normal shutdown ends the process long before it does.
            timer = threading.Timer(SHUTDOWN_LIMIT, self.exit_after_drain, args=(asyncio.get_running_loop(),))
            timer.daemon = True
            timer.start()

    def exit_after_drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ends a drained process whose server shutdown still waits (exit code 0: the drain
        itself completed), naming what it waits for: the loop's tasks, if it still has any,
        and every thread's stack. Runs in a thread of its own."""
        try:
            tasks = describe_tasks(loop=loop) if not loop.is_closed() else "  (the loop is closed)"
        except RuntimeError:  # the loop changed its task set while it was read
            tasks = "  (unreadable)"
        log.error("drain: the server's shutdown still waits %g s after the drain; exiting. Tasks:\n%s\n"
                  "Threads:\n%s", SHUTDOWN_LIMIT, tasks, describe_threads())
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        self.exit_process(0)

    async def close_sockets(self) -> int:
        """Every open socket gets `reconnect` then 4012, its row closed; in waves of
        REALTIME_DRAIN_BATCH sockets every REALTIME_DRAIN_BATCH_INTERVAL seconds, so the nodes
        that take the clients over are not handed every resume at the same instant (measured:
        200 resumes at once kept a node busy for 1.4 s). Sockets waiting for their wave keep
        receiving their conversation's events."""
        consumers = list(self.node.connections)
        batch = max(1, settings.REALTIME_DRAIN_BATCH)
        told = 0
        for start in range(0, len(consumers), batch):
            if start:
                await asyncio.sleep(settings.REALTIME_DRAIN_BATCH_INTERVAL)
            pending = [asyncio.ensure_future(c.go_away()) for c in consumers[start : start + batch]]
            done, not_done = await asyncio.wait(pending, timeout=self.close_timeout)
            for task in not_done:
                task.cancel()
            told += len(done)
        # Sockets that arrived while the waves ran were refused at the door; none is left.
        return told


def install_on_daphne(node: NodeRuntime, grace: float) -> None:
    """Called before daphne's Server.run(): hooks the drain into the reactor once it runs,
    and starts the node (discovery registration, run supervisor) without waiting for a socket."""
    from twisted.internet import reactor

    def in_running_loop() -> None:
        loop = asyncio.get_running_loop()
        # Database calls run on the loop's default executor (realtime.infra.db); its default size
        # (cores + 4) let a burst of slow calls hold up the group commit of every stream.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=settings.REALTIME_DB_THREADS,
                                                     thread_name_prefix="db"))
        # Database threads hand the GIL back and forth with the event loop; a shorter switch
        # interval keeps a thread whose reply has arrived from waiting 5 ms per busy peer.
        sys.setswitchinterval(0.001)
        Drainer(node, grace, reactor.stop, exit_process=os._exit).install(loop)
        node.ensure_started()

    # Twisted's asyncio reactor exposes its event loop only as this attribute.
    loop = reactor._asyncioEventloop  # noqa: SLF001
    reactor.callWhenRunning(lambda: loop.call_soon(in_running_loop))
