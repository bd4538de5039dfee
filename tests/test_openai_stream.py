"""The OpenAI wire without I/O (realtime/agents/openai_stream.py): streamed `tool_calls` deltas
assembled into calls as the servers in the wild send them, arguments parsed before anything is
called, tool names OpenAI accepts, and what goes back to the model after a call."""

import json

import pytest

from realtime.agents.base import ModelResponse, ToolResult, ToolSpec
from realtime.agents.openai_stream import (
    FunctionNames,
    ResponseReader,
    ToolCallAssembler,
    UnreadableStream,
    assistant_message,
    parse_arguments,
    tool_message,
)
from tests.support.fake_openai import tool_call_deltas

pytestmark = pytest.mark.pure


def _assemble(*deltas: dict) -> list[dict]:
    assembler = ToolCallAssembler()
    for delta in deltas:
        for item in delta["tool_calls"]:
            assembler.add(item)
    return assembler.calls()


def test_the_id_and_name_come_only_in_the_first_chunk_and_the_arguments_in_fragments():
    calls = _assemble(*tool_call_deltas(0, "call_a", "demo_effect", '{"n": 12, "note": "x"}', pieces=5))
    assert calls == [{"id": "call_a", "name": "demo_effect", "arguments": '{"n": 12, "note": "x"}'}]


def test_several_calls_interleaved_are_kept_apart_by_index_and_returned_in_index_order():
    first = tool_call_deltas(0, "call_a", "one", '{"n": 1}')
    second = tool_call_deltas(1, "call_b", "two", '{"n": 2}')
    # The second call's head arrives before the first call's fragments end.
    interleaved = [second[0], first[0], first[1], second[1], first[2], second[2], first[3], second[3]]
    assert _assemble(*interleaved) == [
        {"id": "call_a", "name": "one", "arguments": '{"n": 1}'},
        {"id": "call_b", "name": "two", "arguments": '{"n": 2}'},
    ]


def test_ollama_style_every_call_at_index_0_with_its_own_id_is_a_call_of_its_own():
    deltas = [
        {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                         "function": {"name": "demo_effect", "arguments": '{"n": 1}'}}]},
        {"tool_calls": [{"index": 0, "id": "call_2", "type": "function",
                         "function": {"name": "demo_effect", "arguments": '{"n": 2}'}}]},
    ]
    assert _assemble(*deltas) == [
        {"id": "call_1", "name": "demo_effect", "arguments": '{"n": 1}'},
        {"id": "call_2", "name": "demo_effect", "arguments": '{"n": 2}'},
    ]


def test_an_id_repeated_in_every_chunk_stays_one_call():
    deltas = [{"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": piece}}]}
              for piece in ('{"n"', ": 1", "}")]
    assert _assemble(*deltas) == [{"id": "call_1", "name": "f", "arguments": '{"n": 1}'}]


def test_an_id_that_changes_on_a_fragment_stays_the_same_call():
    deltas = [
        {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"n"'}}]},
        {"tool_calls": [{"index": 0, "id": "call_x", "function": {"arguments": ": 1}"}}]},
    ]
    assert _assemble(*deltas) == [{"id": "call_1", "name": "f", "arguments": '{"n": 1}'}]


def test_a_call_without_an_id_gets_a_deterministic_one():
    calls = _assemble(*tool_call_deltas(0, None, "f", "{}"), *tool_call_deltas(1, None, "g", "{}"))
    assert [c["id"] for c in calls] == ["call_0", "call_1"]
    assert calls == _assemble(*tool_call_deltas(0, None, "f", "{}"), *tool_call_deltas(1, None, "g", "{}"))


def test_arguments_sent_as_an_object_are_kept_as_json_text():
    calls = _assemble({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": {"n": 3}}}]})
    assert json.loads(calls[0]["arguments"]) == {"n": 3}


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_arguments_are_an_empty_object(text):
    assert parse_arguments(text) == ({}, "")


@pytest.mark.parametrize("text, says", [
    ('{"n": 1', "not valid JSON"),
    ("[1, 2]", "JSON list, not an object"),
    ('"n"', "JSON str, not an object"),
])
def test_invalid_arguments_are_refused_with_a_reason(text, says):
    arguments, problem = parse_arguments(text)
    assert arguments is None and says in problem and "send a JSON object" in problem


def _read(*payloads: str) -> tuple[list[str], ResponseReader]:
    reader = ResponseReader()
    pieces = [reader.feed(p) for p in payloads]
    return pieces, reader


def _chunk(delta: dict, finish_reason: str | None = None) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})


def test_a_response_reader_gives_the_text_as_it_comes_and_the_whole_response_at_done():
    payloads = [_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Let me "}),
                _chunk({"content": "check."}),
                *(_chunk(d) for d in tool_call_deltas(0, "call_a", "demo_effect", '{"n": 1}')),
                _chunk({}, "tool_calls"), json.dumps({"choices": [], "usage": {"total_tokens": 9}}), "[DONE]"]
    pieces, reader = _read(*payloads)
    assert "".join(pieces) == "Let me check." and reader.done
    assert reader.response() == ModelResponse(
        "Let me check.", [{"id": "call_a", "name": "demo_effect", "arguments": '{"n": 1}'}], "tool_calls",
        {"total_tokens": 9})


@pytest.mark.parametrize("payload, says", [
    ("not json", "unreadable chunk from upstream: not json"),
    ('{"object": "chat.completion.chunk"}', "unreadable chunk"),
    ('{"choices": [{"delta": {"content": 7}}]}', "unreadable chunk"),
    ('{"choices": [{"delta": {"tool_calls": ["x"]}}]}', "tool_calls item is a str"),
    ('{"error": {"message": "overloaded"}}', "upstream reported an error mid-stream"),
])
def test_an_unreadable_chunk_says_what_it_was(payload, says):
    with pytest.raises(UnreadableStream, match=says):
        ResponseReader().feed(payload)


def test_tool_names_are_offered_as_openai_function_names_and_mapped_back():
    specs = [ToolSpec("demo.effect", "d", {"type": "object"}), ToolSpec("demo_effect", "e", {}),
             ToolSpec("x" * 70, "long", {})]
    names = FunctionNames(specs)
    declared = [d["function"]["name"] for d in names.declarations(specs)]
    assert declared == ["demo_effect", "demo_effect_2", "x" * 64]
    assert all(len(n) <= 64 and n.replace("_", "").replace("-", "").isalnum() for n in declared)
    assert [names.tool(n) for n in declared] == ["demo.effect", "demo_effect", "x" * 70]
    assert names.tool("demo.effect") == "demo.effect"  # a model that echoes the tool's own name
    assert names.tool("nope") is None
    assert names.declarations(specs)[0] == {
        "type": "function", "function": {"name": "demo_effect", "description": "d", "parameters": {"type": "object"}}}


def test_the_assistant_message_carries_its_text_and_every_call():
    response = ModelResponse("", [{"id": "a", "name": "f", "arguments": "{}"},
                                  {"id": "b", "name": "g", "arguments": '{"n": 1}'}], "tool_calls")
    assert assistant_message(response) == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": '{"n": 1}'}},
    ]}
    assert assistant_message(ModelResponse("hi")) == {"role": "assistant", "content": "hi"}


@pytest.mark.parametrize("result, content", [
    (ToolResult("ok", {"n": 1}), {"status": "ok", "result": {"n": 1}}),
    (ToolResult("error", error="boom"), {"status": "error", "error": "boom"}),
    (ToolResult("unknown", error="timed out"), {"status": "unknown", "error": "timed out"}),
    (ToolResult("denied", error="approval expired", decision="expired"),
     {"status": "denied", "error": "the call was not made: its approval was expired"}),
])
def test_every_outcome_is_a_tool_message_for_its_call(result, content):
    message = tool_message("call_a", result)
    assert message["role"] == "tool" and message["tool_call_id"] == "call_a"
    assert json.loads(message["content"]) == content
