"""The tests' gated agent (tests/support/gated_agent.py): a long answer stops at the gate's word
until the gate is opened, a short one never waits, and a continued run replays its committed
words without waiting, then waits at the gate too, then yields exactly the rest of the demo
agent's answer."""

from __future__ import annotations

import asyncio

import pytest

from realtime.agents.base import AgentContext
from realtime.agents.demo import compose_answer, split_words
from tests.support.gated_agent import AgentGate, GatedAgent

pytestmark = pytest.mark.pure


def _context(text: str) -> AgentContext:
    return AgentContext("c1", [{"role": "user", "text": text}])


async def _take(stream, count: int) -> list[str]:
    return [await anext(stream) for _ in range(count)]


async def test_a_long_answer_holds_at_the_gate_until_it_opens(tmp_path, monkeypatch):
    gate = AgentGate(tmp_path, after=4)
    for name, value in gate.env.items():
        monkeypatch.setenv(name, value)
    stream = GatedAgent(delay_ms=0).run(_context("count 8"))
    assert await _take(stream, 4) == ["w1 ", "w2 ", "w3 ", "w4 "]
    held = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.2)  # the scenario: nothing may come while the gate is shut
    assert not held.done()
    gate.open()
    assert await asyncio.wait_for(held, 5) == "w5 "
    assert [w async for w in stream] == ["w6 ", "w7 ", "w8"]


async def test_a_short_answer_and_a_continuation(tmp_path, monkeypatch):
    gate = AgentGate(tmp_path, after=4)
    for name, value in gate.env.items():
        monkeypatch.setenv(name, value)
    assert [w async for w in GatedAgent(delay_ms=0).run(_context("count 3"))] == ["w1 ", "w2 ", "w3"]

    # Interrupted after 5 words: replayed (as the runtime does: `replaying` while behind the
    # committed text) without waiting, although words 5 and on are past the gate's index;
    # the rest waits for the gate, then is the same answer's rest.
    context = _context("count 8")
    context.replaying = True
    stream = GatedAgent(delay_ms=0).run(context)
    assert "".join(await _take(stream, 5)) == "w1 w2 w3 w4 w5 "
    context.replaying = False
    held = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.2)
    assert not held.done()
    gate.open()
    rest = [await asyncio.wait_for(held, 5)] + [w async for w in stream]
    assert "w1 w2 w3 w4 w5 " + "".join(rest) == compose_answer(_context("count 8"))
    assert rest == split_words("w6 w7 w8")
