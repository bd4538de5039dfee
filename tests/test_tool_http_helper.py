"""The HTTP helper every external tool call uses (realtime/tools/context.py), against a real HTTP
service on loopback (tests/support/effect_sink.py): one request per call, carrying the call's
effect key as `Idempotency-Key` and the attempt's fencing token as `Tether-Fence`; and the TLS
settings built once per process, not per call (building them loads the CA bundle: tens of
milliseconds of the event loop's CPU on every call before, docs/benchmarks.md "Tool calls")."""

from __future__ import annotations

import ssl
import uuid

import pytest

from realtime.tools.context import OutcomeUnknown, ToolContext, ToolHTTPError
from tests.support.effect_sink import EffectSink

pytestmark = pytest.mark.pure


def a_call(run_id: str, fence: int, call_id: str | None = None) -> ToolContext:
    return ToolContext("conversation-1", run_id, call_id or str(uuid.uuid4()), fence, 5.0)


async def test_each_call_is_one_request_with_its_key_and_its_fence():
    run_id = str(uuid.uuid4())
    first, retry = a_call(run_id, 3), None
    with EffectSink() as sink:
        assert await first.post(sink.url, {"run_id": run_id, "n": 1}) == {"n": 1, "applied": 1}
        retry = a_call(run_id, 4, call_id=first.call_id)  # the same call after a takeover
        assert await retry.post(sink.url, {"run_id": run_id, "n": 1}) == {"n": 1, "applied": 1}
        late = a_call(run_id, 3, call_id=first.call_id)  # the old owner's request, arriving late
        with pytest.raises(ToolHTTPError, match="HTTP 409"):
            await late.post(sink.url, {"run_id": run_id, "n": 1})
    assert [(r.key, r.fence, r.outcome) for r in sink.requests] == [
        (first.call_id, 3, "applied"), (first.call_id, 4, "duplicate"), (first.call_id, 3, "stale")]


async def test_no_answer_is_an_unknown_outcome_and_nothing_listening_an_error():
    with EffectSink() as sink:
        held = sink.hold(lambda r: True, process_first=True)
        call = ToolContext("conversation-1", str(uuid.uuid4()), str(uuid.uuid4()), 1, 0.5)
        with pytest.raises(OutcomeUnknown):  # sent, maybe acted on, no answer within the timeout
            await call.post(sink.url, {"run_id": call.run_id, "n": 1})
        held.release()
        url = sink.url
    with pytest.raises(ToolHTTPError, match="could not connect"):  # never reached anyone
        await a_call(str(uuid.uuid4()), 1).post(url, {"n": 1})


async def test_tls_settings_are_built_once_per_process_not_per_call(monkeypatch):
    built = []
    create = ssl.create_default_context

    def counted(*args, **kwargs):
        built.append(args or kwargs)
        return create(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    run_id = str(uuid.uuid4())
    with EffectSink() as sink:
        for n in range(3):
            await a_call(run_id, 1).post(sink.url, {"run_id": run_id, "n": n})
    assert len(sink.requests) == 3
    assert len(built) <= 1, f"TLS settings built {len(built)} times for 3 calls"
