"""An acting agent's run, step by step, against its journal (design: docs/architecture.md,
"Tools"). One `Acting` per claim: the supervisor feeds it what the agent yields, it answers
with what each step gave.

What each step does, by what the journal already holds for it:

- nothing recorded: text is new (to the client, through the run's pump); a tool call is
  recorded, then made (or waits for an approval); a model request is sent, its text streamed,
  and it is recorded when complete;
- recorded as done: text is dropped (committed before); a tool call gives its recorded result
  and nothing is called; a model request gives its recorded response and nothing is sent;
- under way when the last owner stopped: a `read` or `idempotent` call is made again (same
  key, new fence); a `once` call is `unknown`, and a person decides whether to call it again;
  a model request is sent again, continuing the text it had streamed.

Before a tool call or a model request is recorded, the text the agent yielded before it is
committed (`flush`), so the log has them in the order the agent yielded them and the journal
knows where in the text each step happened.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from realtime.agents.base import AgentContext, ModelCall, ModelResponse, ToolCall, ToolResult
from realtime.fanout.publish import commit_and_publish
from realtime.infra.db import db
from realtime.runs.replay import Divergence, TextCursor
from realtime.tools import registry
from realtime.tools.context import OutcomeUnknown, ToolContext
from sessions_app import services

log = logging.getLogger(__name__)


class RunSuspended(Exception):
    """The run waits for an approval: it holds no lease and no task any more."""


class AgentDiverged(Exception):
    """The agent did not repeat what its journal recorded; nothing was called."""


def request_hash(request: dict) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Acting:
    def __init__(
        self,
        claim: services.ClaimedRun,
        journal: services.Journal,
        *,
        lease_seconds: float,
        emit: Callable[[str], None],
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        self.claim = claim
        self.journal = journal
        self.lease_seconds = lease_seconds
        self.emit = emit  # hands new text to the run's pump
        self.flush = flush  # returns once everything emitted so far is committed
        self.cursor = TextCursor(journal.text)
        self.steps = 0  # tool calls the agent yielded so far
        self.model_calls = 0  # model requests the agent yielded so far

    @property
    def replaying(self) -> bool:
        """Behind the journal: what the agent does next was done before."""
        return (self.cursor.behind or self.steps in self.journal.calls
                or self.model_calls < len(self.journal.model_calls))

    # --- text -------------------------------------------------------------------------------

    def text(self, piece: str) -> None:
        try:
            new = self.cursor.text(piece)
        except Divergence as exc:
            raise AgentDiverged(str(exc)) from None
        if new:
            self.emit(new)

    def finished(self) -> None:
        try:
            self.cursor.finished()
        except Divergence as exc:
            raise AgentDiverged(str(exc)) from None

    # --- tool calls -------------------------------------------------------------------------

    async def tool(self, call: ToolCall, context: AgentContext) -> ToolResult:
        step = self.steps
        self.steps += 1
        recorded = self.journal.calls.get(step)
        if recorded:
            first = recorded[0]
            if (first.tool, first.arguments) != (call.tool, call.arguments):
                raise AgentDiverged(f"tool call {step} was {first.tool}({first.arguments}), "
                                    f"the agent now asks {call.tool}({call.arguments})")
            try:
                self.cursor.expect(first.text_offset, f"tool call {step}")
            except Divergence as exc:
                raise AgentDiverged(str(exc)) from None
            return await self._resume(recorded)
        try:
            tool = registry.get(call.tool)
        except registry.UnknownTool as exc:
            # Decided from what the agent asked: the same on every replay, so not journaled.
            return ToolResult("error", error=str(exc))
        effect = tool.effect_now()
        approval = tool.needs_approval(call.arguments, context)
        await self.flush()
        claim = self.claim
        if effect == "local" and not approval:
            written = await commit_and_publish(
                _local, claim.conversation_id, claim.run_id, claim.fencing_token, step, 0, tool.name,
                call.arguments, self.cursor.position, tool.function_for("local"), self.lease_seconds,
            )
            return _result(written.call)
        written = await commit_and_publish(
            _begin, claim.conversation_id, claim.run_id, claim.fencing_token, step, tool.name, effect,
            call.arguments, self.cursor.position, approval, self.lease_seconds,
        )
        if written.waiting:
            raise RunSuspended(f"tool call {step} ({tool.name}) waits for an approval")
        return await self._make(tool, written.call, written.fencing_token)

    async def _resume(self, chain: list[services.CallRecord]) -> ToolResult:
        """The step's latest call (its last retry), as the journal has it."""
        call = chain[-1]
        if call.status == "denied" and any(c.status == "unknown" for c in chain[:-1]):
            # A `once` call whose outcome was lost, and the user chose not to call it again:
            # it may still have happened. The agent is told exactly that.
            return ToolResult("unknown", None, "outcome unknown: the call may have happened; "
                              f"calling it again was {_result(call).decision}", _result(call).decision,
                              chain[0].call_id)
        if call.status in ("ok", "error", "unknown", "denied"):
            return _result(call)
        claim = self.claim
        if call.status == "intent":
            if call.approval != "approved":
                # Claimed while its approval is open: the run should be waiting. Not called.
                raise RuntimeError(f"call {call.call_id} waits for its approval ({call.approval}) in a claimed run")
            tool = registry.get(call.tool)
            if call.effect == "local":
                written = await commit_and_publish(
                    _local, claim.conversation_id, claim.run_id, claim.fencing_token, call.step, call.retry,
                    call.tool, call.arguments, call.text_offset, tool.function_for("local"), self.lease_seconds,
                )
                return _result(written.call)
            written = await commit_and_publish(
                services.start_call, claim.conversation_id, claim.run_id, claim.fencing_token, call.call_id,
                self.lease_seconds,
            )
            return await self._make(tool, written.call, written.fencing_token)
        # `started`: its last owner stopped during the call (a `local` call never is: its
        # outcome commits with its start).
        if call.effect == "once":
            log.warning("once call %s (%s) was under way when its node stopped: outcome unknown",
                        call.call_id, call.tool)
            await commit_and_publish(services.give_up_unknown, claim.conversation_id, claim.run_id,
                                     claim.fencing_token, call.call_id, "its node stopped during the call")
            raise RunSuspended(f"call {call.call_id} ({call.tool}): outcome unknown; asking the user")
        log.info("%s call %s (%s) was under way when its node stopped: calling it again with the same key",
                 call.effect, call.call_id, call.tool)
        written = await commit_and_publish(
            services.start_call, claim.conversation_id, claim.run_id, claim.fencing_token, call.call_id,
            self.lease_seconds,
        )
        return await self._make(registry.get(call.tool), written.call, written.fencing_token)

    async def _make(self, tool: registry.Tool, call: services.CallRecord, fencing_token: int) -> ToolResult:
        """Makes a started call (the journal says so already) and records its outcome."""
        claim = self.claim
        timeout = settings.REALTIME_TOOL_TIMEOUT
        context = ToolContext(claim.conversation_id, claim.run_id, call.call_id, fencing_token, timeout)
        status, result, error = "ok", None, ""
        try:
            async with asyncio.timeout(timeout):
                result = await tool.function_for(call.effect)(context, **call.arguments)
        except TimeoutError:
            status, error = "unknown", f"timed out after {timeout:g} s"
        except OutcomeUnknown as exc:
            status, error = "unknown", str(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the tool's failure is its result
            status, error = "error", f"{type(exc).__name__}: {exc}"[:500]
        if status == "unknown" and call.effect == "once":
            await commit_and_publish(services.give_up_unknown, claim.conversation_id, claim.run_id,
                                     fencing_token, call.call_id, error)
            raise RunSuspended(f"call {call.call_id} ({call.tool}): outcome unknown; asking the user")
        if status == "unknown":
            status = "error"  # a read or idempotent call may simply be made again: it failed
        written = await commit_and_publish(
            services.finish_call, claim.conversation_id, claim.run_id, fencing_token, call.call_id, status,
            result, error,
        )
        return _result(written.call)

    # --- model requests ---------------------------------------------------------------------

    async def model(self, call: ModelCall) -> ModelResponse:
        index = self.model_calls
        self.model_calls += 1
        digest = request_hash(call.request)
        if index < len(self.journal.model_calls):
            recorded = self.journal.model_calls[index]
            try:
                self.cursor.expect(recorded.text_offset, f"model request {index}")
                self.cursor.replay(recorded.response.get("content", ""), f"model request {index}")
            except Divergence as exc:
                raise AgentDiverged(str(exc)) from None
            if recorded.request_hash != digest:
                # Its response was paid for: replayed all the same (a deploy changed the prompt).
                log.warning("model request %s of run %s differs from the recorded one; its recorded "
                            "response is used", index, self.claim.run_id)
            return ModelResponse.from_record(recorded.response)
        await self.flush()
        offset = self.cursor.position
        # What an interrupted sending of this request streamed before its node stopped: the
        # client has it, so the new response must continue it.
        partial = self.cursor.take_tail()
        content = [partial]
        response: ModelResponse | None = None
        async for item in call.send(call.request, partial):
            if isinstance(item, ModelResponse):
                response = item
                break
            self.text(item)
            content.append(item)
        if response is None:
            raise RuntimeError(f"model request {index} ended without a response")
        await self.flush()
        whole = ModelResponse("".join(content), response.tool_calls, response.finish_reason, response.usage)
        claim = self.claim
        await db(services.record_model_call)(
            claim.conversation_id, claim.run_id, claim.fencing_token, index=index, request_hash=digest,
            response=whole.as_record(), text_offset=offset,
        )
        return whole


def _begin(conversation_id: str, run_id: str, fencing_token: int, step: int, tool: str, effect: str,
           arguments: dict, text_offset: int, needs_approval: bool, lease_seconds: float) -> services.CallWritten:
    return services.begin_call(
        conversation_id, run_id, fencing_token, step=step, tool=tool, effect=effect, arguments=arguments,
        text_offset=text_offset, needs_approval=needs_approval, lease_seconds=lease_seconds,
    )


def _local(conversation_id: str, run_id: str, fencing_token: int, step: int, retry: int, tool: str,
           arguments: dict, text_offset: int, fn: Callable[..., Any], lease_seconds: float) -> services.CallWritten:
    return services.run_local_call(
        conversation_id, run_id, fencing_token, step=step, retry=retry, tool=tool, arguments=arguments,
        text_offset=text_offset, fn=fn, timeout_seconds=settings.REALTIME_TOOL_TIMEOUT, lease_seconds=lease_seconds,
    )


def _result(call: Any) -> ToolResult:
    decision = call.approval if call.status == "denied" and call.approval in ("denied", "expired") else None
    if call.status == "denied" and decision is None:
        decision = "expired" if call.error == "approval expired" else "denied"
    return ToolResult(call.status, call.result, call.error, decision, call.call_id)
