"""Agent runs that outlive sockets.

A RunSupervisor lives as long as its node (server process or `manage.py run_agents` worker),
not as long as any socket. It claims runs through the database (one at a time per
conversation, earliest message first), holds each with a lease it renews, and appends deltas
only while its fencing token is current, so a paused or partitioned node can never write
after another node took the run over. A run left by a dead node is claimed again once its
lease lapses and continues from the text it had committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from django.conf import settings

from realtime.agents.base import Agent, AgentContext, ModelCall, ToolCall, is_acting, load_agent
from realtime.core import metrics
from realtime.fanout.publish import commit_and_publish, publish_committed
from realtime.infra import logcontext
from realtime.infra.db import db
from realtime.infra.group_call import GroupCall
from realtime.infra.transient import TRANSIENT_ERRORS, warn_failed
from realtime.runs.acting import Acting, AgentDiverged, RunSuspended
from realtime.runs.delta_writer import DeltaWriter, RunText
from realtime.tools import registry as tool_registry
from sessions_app import services

log = logging.getLogger(__name__)

_DONE = object()
_CANCEL = object()
_SUSPENDED = object()  # the run waits for an approval (it holds nothing any more)


# What a client reads in `agent.failed` when the agent failed. The cause stays on the server
# (the log, and the run row's `error` for operators): an upstream's error body can carry its
# account, its quota, or a piece of someone's prompt (issue 24).
AGENT_FAILED = "the agent failed; the server logged why"
# An acting agent that did not repeat its journal after a takeover (nothing was called).
AGENT_DIVERGED = "the agent could not continue this run after an interruption; the server logged why"


class AgentFailure(Exception):
    """The agent failed: `str()` is what the client is told, `detail` what operators see."""

    def __init__(self, public: str, detail: str = "") -> None:
        super().__init__(public)
        self.detail = detail


class RunSupervisor:
    def __init__(
        self,
        node_id: str,
        *,
        agent_factory: Callable[[], Agent] = load_agent,
        lease_seconds: float | None = None,
        sweep_interval: float | None = None,
        coalesce_ms: int | None = None,
        coalesce_max_ms: int | None = None,
        max_concurrent: int | None = None,
        run_timeout: float | None = None,
    ):
        self.node_id = node_id
        self.agent_factory = agent_factory
        self.lease_seconds = lease_seconds or settings.REALTIME_RUN_LEASE_SECONDS
        self.sweep_interval = sweep_interval or settings.REALTIME_RUN_SWEEP_INTERVAL
        self.coalesce = (settings.REALTIME_DELTA_COALESCE_MS if coalesce_ms is None else coalesce_ms) / 1000
        self.coalesce_max = max(self.coalesce, (
            settings.REALTIME_DELTA_COALESCE_MAX_MS if coalesce_max_ms is None else coalesce_max_ms) / 1000)
        self.max_concurrent = max_concurrent or settings.REALTIME_MAX_CONCURRENT_RUNS
        self.run_timeout = run_timeout or settings.REALTIME_RUN_TIMEOUT
        self.drivers: dict[str, asyncio.Task] = {}
        self.executing: dict[str, asyncio.Queue] = {}
        self._claims: dict[str, services.ClaimedRun] = {}
        # Claims under way in a database thread: a stop cannot cancel them (the thread runs
        # on), so it waits for them and releases what they won.
        self._claiming: set[asyncio.Future] = set()
        self._rekick: set[str] = set()
        self._sweeper: asyncio.Task | None = None
        self._sweep_wake = asyncio.Event()
        self.stopping = False
        self.writer = DeltaWriter(self.lease_seconds, self.coalesce, self.coalesce_max)
        # Claims made while one is under way share the next call, with their contexts (a burst
        # of messages: a few calls instead of two per run).
        self.claims = GroupCall(self._claim_runs, parallel=max(1, settings.REALTIME_DB_THREADS // 2),
                                key=lambda conversation_id: conversation_id)

    # --- control ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def sweep_now(self) -> None:
        """Runs were released (a dead node was reaped): look for them now, not at the next sweep."""
        self._sweep_wake.set()

    def kick(self, conversation_id: str) -> None:
        """Something became claimable in this conversation: try now rather than at the next sweep."""
        if self.stopping:
            return
        if conversation_id in self.drivers:
            self._rekick.add(conversation_id)
            return
        self.drivers[conversation_id] = asyncio.get_running_loop().create_task(self._drive(conversation_id))

    def cancel_local_run(self, run_id: str) -> bool:
        queue = self.executing.get(run_id)
        if queue is None:
            return False
        queue.put_nowait(_CANCEL)
        return True

    async def stop(self, *, abandon: bool = False, grace: float = 0.0) -> None:
        """Stops claiming. `abandon` drops everything at once, as a crash would (leases lapse
        and other nodes take over); otherwise runs get `grace` seconds to finish and the rest
        have their leases released so another node continues them at once."""
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        drivers = list(self.drivers.values())
        if not abandon and drivers and grace > 0:
            await asyncio.wait(drivers, timeout=grace)
        claims = list(self._claims.values())
        for task in drivers:
            task.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)
        late = await asyncio.gather(*self._claiming, return_exceptions=True)
        self._claiming.clear()
        claims += [c for c in late if isinstance(c, services.ClaimedRun)]
        await self.writer.stop()
        if not abandon:
            for claim in claims:
                try:
                    await db(services.release_run)(claim.run_id, claim.fencing_token)
                except Exception as exc:  # noqa: BLE001 - the lease lapses anyway; warn_failed logs a bug's traceback
                    warn_failed(log, "releasing a run failed; its lease lapses", exc=exc)

    # --- claiming ---------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while not self.stopping:
            try:
                # Approvals past their time are decided `expired` (their runs queued again):
                # every node's sweep does it, the conversation lock makes one of them win.
                for expired in await db(services.expire_approvals)():
                    await publish_committed(expired)
                for conversation_id in await db(services.claimable_conversations)():
                    if len(self.executing) >= self.max_concurrent:
                        break
                    self.kick(conversation_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a database blip must not stop the sweeper; warn_failed logs a bug's traceback
                warn_failed(log, "run sweep failed", exc=exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweep_wake.wait(), self.sweep_interval)
            self._sweep_wake.clear()

    async def _drive(self, conversation_id: str) -> None:
        try:
            while not self.stopping and len(self.executing) < self.max_concurrent:
                self._rekick.discard(conversation_id)
                claim = await self._claim(conversation_id)
                if claim is None:
                    if conversation_id in self._rekick:
                        continue
                    break
                await self._execute(claim)
        except asyncio.CancelledError:
            raise
        except TRANSIENT_ERRORS as exc:
            # The database or Redis went away mid-run: the run keeps its lease until it lapses,
            # then a sweep (here or elsewhere) claims it again and it goes on from its
            # committed text (services.committed_text).
            warn_failed(log, "a run stopped: the database or Redis is unavailable; it is taken up again later", exc=exc)
        except Exception:  # the sweeper retries the conversation
            log.exception("driving runs of %s failed", conversation_id)
        finally:
            self.drivers.pop(conversation_id, None)

    def _claim_runs(self, conversation_ids: list[str]) -> list[services.ClaimedRun | None | Exception]:
        return services.claim_runs(conversation_ids, self.node_id, self.lease_seconds)

    async def _claim(self, conversation_id: str) -> services.ClaimedRun | None:
        claiming = asyncio.ensure_future(self.claims(conversation_id))
        self._claiming.add(claiming)
        try:
            claim = await asyncio.shield(claiming)
        except asyncio.CancelledError:
            # Stays listed until the stop that cancelled us has waited for it, even when the
            # claim had already succeeded and only its delivery to this task was cancelled.
            raise
        except Exception:
            self._claiming.discard(claiming)
            raise
        self._claiming.discard(claiming)
        return claim

    # --- executing --------------------------------------------------------------------------

    async def _execute(self, claim: services.ClaimedRun) -> None:
        conversation_id, run_id, token = claim.conversation_id, claim.run_id, claim.fencing_token
        loop = asyncio.get_running_loop()
        # The budget counts from the run's first start, not from this claim: restarted at every
        # takeover, a run that keeps being taken over would never time out.
        deadline = loop.time() + self.run_timeout - claim.elapsed_seconds
        logcontext.bind_only(node=self.node_id, run_id=run_id, conversation_id=conversation_id)
        log.info("run claimed", extra={"takeover": claim.takeover, "fencing_token": token})
        metrics.run_claimed(claim.takeover)
        claimed_at, ended = loop.time(), "released"  # a stop cancels us: released
        await publish_committed(claim)
        queue: asyncio.Queue = asyncio.Queue()
        self.executing[run_id] = queue
        self._claims[run_id] = claim
        producer: asyncio.Task | None = None
        # A refused or failed write of the run's text stops the pump, whatever it waits for.
        text = self.writer.open(claim, queue.put_nowait)
        renewer = loop.create_task(self._renew(claim, queue, text))
        try:
            # Read with the claim (`claim_runs`); loaded here for a claim made otherwise.
            context = claim.context or await db(services.load_run_context)(run_id)
            if context.cancel_requested:
                raise services.RunCancelled("cancel requested")
            if loop.time() >= deadline:
                raise TimeoutError  # spent before this claim: the agent is not started again
            agent_context = AgentContext(
                conversation_id=conversation_id,
                history=context.history,
                memory=context.memory,
                partial_text=context.partial_text,
                tools=tool_registry.specs(),
                run_id=run_id,
            )
            producer = loop.create_task(self._produce(claim, agent_context, queue, text))
            async with asyncio.timeout_at(deadline):
                suspended = await self._pump(queue, text)
            if suspended:
                ended = "waiting"
                log.info("run %s waits for an approval", run_id)
            else:
                # Completed in the group commit that takes the run's last text, published with it.
                await text.finish(agent_context.memory)
                ended = "completed"
        except services.LeaseLost:
            ended = "lease_lost"
            log.warning("run %s: lease lost; another node continues it", run_id)
        except services.RunCancelled:
            ended = await self._end(claim, "cancelled", cancelled=True)
        except TimeoutError:
            ended = await self._end(claim, f"agent did not finish within {self.run_timeout:g} s")
        except AgentFailure as exc:
            ended = await self._end(claim, str(exc) or AGENT_FAILED, detail=exc.detail)
        finally:
            metrics.run_ended(ended, asyncio.get_running_loop().time() - claimed_at)
            log.info("run ended: %s", ended, extra={"status": ended})
            self.executing.pop(run_id, None)
            self._claims.pop(run_id, None)
            text.close()
            renewer.cancel()
            if producer is not None:
                producer.cancel()

    async def _end(self, claim: services.ClaimedRun, error: str, cancelled: bool = False, detail: str = "") -> str:
        """Ends the run failed (or cancelled); returns how it ended, for the metrics."""
        try:
            await commit_and_publish(
                services.fail_run, claim.conversation_id, claim.run_id, claim.fencing_token, error, cancelled,
                detail,
            )
        except services.LeaseLost:
            return "lease_lost"
        return "cancelled" if cancelled else "failed"

    async def _produce(self, claim: services.ClaimedRun, context: AgentContext, queue: asyncio.Queue,
                       text: RunText) -> None:
        """Runs the agent; its text goes to the writer, how it ended to the queue (the pump)."""
        try:
            agent = self.agent_factory()
            if is_acting(agent):
                await self._act(claim, agent, context, text)
            else:
                async for delta in agent.stream(context):
                    text.add(delta)
        except asyncio.CancelledError:
            raise
        except RunSuspended:
            queue.put_nowait(_SUSPENDED)
            return
        except services.ServiceError as exc:  # LeaseLost, RunCancelled: the pump ends the run so
            queue.put_nowait(exc)
            return
        except AgentDiverged as exc:
            log.error("agent diverged from its journal: %s", exc)
            # The detail names tools and arguments: for operators (the log, the run row), not clients.
            queue.put_nowait(AgentFailure(AGENT_DIVERGED, f"the agent diverged from its journal: {exc}"))
            return
        except Exception as exc:  # reported as agent.failed
            log.warning("agent failed: %s", exc, exc_info=True)
            queue.put_nowait(AgentFailure(AGENT_FAILED, f"{type(exc).__name__}: {exc}"))
            return
        queue.put_nowait(_DONE)

    async def _act(self, claim: services.ClaimedRun, agent: Agent, context: AgentContext, text: RunText) -> None:
        """Drives an acting agent (realtime/agents/base.py) against its journal: from the start,
        each step answered from the journal when it was done before (realtime/runs/acting.py)."""
        journal = await db(services.load_journal)(claim.run_id)
        acting = Acting(claim, journal, lease_seconds=self.lease_seconds, emit=text.add, flush=text.committed)
        steps = agent.run(context)
        answer = None
        try:
            while True:
                context.replaying = acting.replaying
                try:
                    step = await steps.asend(answer)
                except StopAsyncIteration:
                    break
                answer = None
                if isinstance(step, str):
                    acting.text(step)
                elif isinstance(step, ToolCall):
                    answer = await acting.tool(step, context)
                elif isinstance(step, ModelCall):
                    answer = await acting.model(step)
                else:
                    raise TypeError(f"an agent yields text, ToolCall or ModelCall, not {type(step).__name__}")
            acting.finished()
        finally:
            await steps.aclose()

    async def _pump(self, queue: asyncio.Queue, text: RunText) -> bool:
        """Waits for the run's end; True when it stopped to wait for an approval, False when the
        agent is done. Whatever the agent said before its end is committed first (a failed
        run's text too: the log keeps what the client saw). The text itself does not pass here:
        the agent adds it to the node's group commit (realtime/runs/delta_writer.py), which
        writes every run's text at most once per coalescing window."""
        while True:
            item = await queue.get()
            if item is _DONE:
                # Its last text is not awaited here: `RunText.finish` completes the run in the
                # batch that takes it (or after it), and raises a refused write's failure.
                return False
            await text.committed()  # raises the write's failure when it was refused
            if item is _SUSPENDED:
                return True
            if item is _CANCEL:
                raise services.RunCancelled("cancelled")
            raise item  # AgentFailure, LeaseLost, or a failed write's error

    def coalescing_window(self) -> float:
        """Seconds between two deltas of a run (and two group commits of the node):
        REALTIME_DELTA_COALESCE_MS, growing to twice the recent duration of a group commit when
        the node is loaded, up to REALTIME_DELTA_COALESCE_MAX_MS."""
        return self.writer.window()

    async def _renew(self, claim: services.ClaimedRun, queue: asyncio.Queue, text: RunText) -> None:
        """Keeps the lease while the agent thinks between deltas; reports loss or cancel. Every
        committed delta renews its run's lease (and would notice a cancel or a lost lease), so
        the renewer only speaks while the agent is silent."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            if loop.time() - text.committed_at < self.lease_seconds / 3:
                continue
            try:
                state = await db(services.renew_run_lease)(claim.run_id, claim.fencing_token, self.lease_seconds)
            except Exception as exc:  # noqa: BLE001 - try again, the lease has slack for a blip; warn_failed logs a bug's traceback
                warn_failed(log, "renewing a run's lease failed", exc=exc)
                continue
            if state == "cancel":
                queue.put_nowait(_CANCEL)
                return
            if state == "lost":
                queue.put_nowait(services.LeaseLost("lease lost"))
                return

