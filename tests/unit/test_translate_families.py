"""The four families through the neutral form: Responses ⇄ neutral ⇄ Anthropic ⇄ Ollama
(⇄ OpenAI chat), for requests, whole answers and streams.

Round trips are checked over the subset every family can say: a system prompt, user turns
with text and images, assistant turns with text and tool calls (with ids), tool results
naming their call, function tools, every tool choice, temperature, top_p, a token limit and
``stream``. What only some families have (``stop`` and ``top_k``: not in Responses; JSON
formats: not in Anthropic; earlier turns' reasoning: not sent to Anthropic or Responses
upstreams) is checked where it is mapped, in ``test_translate.py`` and below.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgarden.api.streaming import ANTHROPIC_SSE, RESPONSES_SSE, event_type
from modelgarden.errors import BadRequest
from modelgarden.translate import anthropic as an
from modelgarden.translate import ollama as ot
from modelgarden.translate import openai as oa
from modelgarden.translate import responses as rs
from modelgarden.translate.stream import (
    Decoder,
    Encoder,
    NDJSONDecoder,
    OllamaEncoder,
    OpenAIChatEncoder,
    SSEDecoder,
    join,
)
from modelgarden.translate.stream_anthropic import AnthropicDecoder, AnthropicEncoder
from modelgarden.translate.stream_responses import ResponsesDecoder, ResponsesEncoder
from modelgarden.types import ChatMessage, Chunk, InferenceRequest, Sampling, ToolCall, Usage

PROPERTY = settings(max_examples=150, deadline=None)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"


def wire(body: Any) -> Any:
    """What the other side reads: the body through JSON text."""
    return json.loads(json.dumps(body))


# --- strategies ---------------------------------------------------------------------------------

text = st.text(max_size=10)
words = st.text(min_size=1, max_size=10)
names = st.sampled_from(["get_weather", "search", "add"])
keys = st.text(alphabet="abcxyz_", min_size=1, max_size=5)
scalars = st.one_of(text, st.integers(-(2**53), 2**53), st.booleans())
arguments = st.dictionaries(keys, st.one_of(scalars, st.lists(scalars, max_size=2)), max_size=3)
images = st.lists(
    st.builds(
        lambda magic, rest: base64.b64encode(magic + rest).decode(),
        st.sampled_from([PNG, JPEG, b""]),
        st.binary(min_size=1, max_size=12),
    ),
    max_size=2,
)
schemas = st.builds(
    lambda props: {"type": "object", "properties": {k: {"type": t} for k, t in props.items()}},
    st.dictionaries(keys, st.sampled_from(["string", "integer"]), max_size=2),
)
tools = st.lists(
    st.builds(
        lambda n, d, s: {
            "type": "function",
            "function": {"name": n, "description": d, "parameters": s},
        },
        names,
        text,
        schemas,
    ),
    max_size=2,
)
unit = st.one_of(st.none(), st.floats(0, 1))


@st.composite
def conversations(draw: st.DrawFn) -> list[ChatMessage]:
    """A conversation in the shared subset (calls get ids, results name their call)."""
    messages = [ChatMessage("system", draw(words))] if draw(st.booleans()) else []
    count, turns = 0, draw(st.integers(1, 3))
    for turn in range(turns):
        messages.append(ChatMessage("user", draw(words), images=draw(images)))
        if turn == turns - 1 and draw(st.booleans()):
            break  # the conversation may end with the user (turns alternate before that)
        if draw(st.booleans()):
            calls = []
            for name in draw(st.lists(names, min_size=1, max_size=2)):
                count += 1
                calls.append(ToolCall(name, draw(arguments), f"call_{count}"))
            messages.append(ChatMessage("assistant", draw(text), tool_calls=calls))
            for call in draw(st.permutations(calls)):
                msg = ChatMessage("tool", draw(text), tool_name=call.name, tool_call_id=call.id)
                messages.append(msg)
        else:
            messages.append(ChatMessage("assistant", draw(words)))
    return messages


@st.composite
def requests(draw: st.DrawFn) -> InferenceRequest:
    req = InferenceRequest(kind="chat", model="smollm2:135m", messages=draw(conversations()))
    req.tools = draw(tools)
    choice = draw(st.sampled_from([None, "none", "required", "named"]))
    req.tool_choice = draw(names) if choice == "named" else choice
    if not req.tools:  # a choice among no tools says nothing (Anthropic's API refuses it)
        req.tool_choice = None
    req.sampling = Sampling(
        temperature=draw(unit), top_p=draw(unit), max_tokens=draw(st.integers(1, 4096))
    )
    req.stream = draw(st.booleans())
    return req


@dataclass(frozen=True)
class Family:
    """One family's request translation, both ways."""

    request_in: Callable[[dict[str, Any]], InferenceRequest]
    request_out: Callable[[InferenceRequest], tuple[str, dict[str, Any]]]


FAMILIES = {
    "responses": Family(rs.request_in, rs.request_out),
    "anthropic": Family(an.request_in, an.request_out),
    "ollama": Family(ot.chat_request_in, ot.request_out),
    "openai": Family(oa.chat_request_in, oa.request_out),
}


def through(req: InferenceRequest, family: str) -> InferenceRequest:
    """A neutral request written in a family's wire form and read back."""
    _, body = FAMILIES[family].request_out(req)
    return FAMILIES[family].request_in(wire(body))


def shared(req: InferenceRequest) -> tuple[Any, ...]:
    """The part of a request every family carries."""
    s = req.sampling
    sampling = (s.temperature, s.top_p, s.max_tokens)
    return (req.model, req.messages, req.tools, req.tool_choice, sampling, req.stream)


# --- requests -----------------------------------------------------------------------------------


@PROPERTY
@given(requests(), st.sampled_from(sorted(FAMILIES)))
def test_each_family_round_trips_the_shared_subset(req: InferenceRequest, family: str) -> None:
    assert shared(through(req, family)) == shared(req)


@PROPERTY
@given(requests(), st.lists(st.sampled_from(sorted(FAMILIES)), min_size=2, max_size=5))
def test_any_chain_of_families_keeps_the_shared_subset(
    req: InferenceRequest, chain: list[str]
) -> None:
    """Responses → neutral → Anthropic → neutral → Ollama ..., in any order."""
    out = req
    for family in chain:
        out = through(out, family)
    assert shared(out) == shared(req)


def test_a_codex_style_input_reads_as_one_conversation() -> None:
    body = {
        "model": "m",
        "instructions": "You are a coding agent.",
        "input": [
            {"type": "message", "role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "list files"}]},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "ls"}],
            },
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "shell",
                "arguments": '{"cmd":"ls"}',
            },
            {"type": "function_call_output", "call_id": "c1", "output": "a.py"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "a.py"}]},
        ],
        "reasoning": {"effort": "xhigh"},
    }
    req = rs.request_in(body)
    roles = [(m.role, m.content) for m in req.messages]
    assert roles == [
        ("system", "You are a coding agent."),
        ("system", "Be brief."),
        ("user", "list files"),
        ("assistant", ""),
        ("tool", "a.py"),
        ("assistant", "a.py"),
    ]
    assert req.messages[3].thinking == "ls"
    assert req.messages[3].tool_calls == [ToolCall("shell", {"cmd": "ls"}, "c1")]
    assert req.messages[4].tool_name == "shell" and req.extra["think"] == "max"


def test_claude_code_style_messages_keep_results_in_order() -> None:
    body = {
        "model": "m",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "agents: none"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"p": "x"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "data"}],
                    },
                    {"type": "text", "text": "go on"},
                ],
            },
        ],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "tool_choice": {"type": "any"},
    }
    req = an.request_in(body)
    assert [(m.role, m.content) for m in req.messages] == [
        ("system", "sys"),
        ("user", "hi"),
        ("system", "agents: none"),  # a system turn mid-conversation, as Claude Code sends
        ("assistant", ""),
        ("tool", "data"),
        ("user", "go on"),
    ]
    assert req.messages[3].thinking == "hmm" and req.messages[4].tool_name == "Read"
    assert req.extra["think"] is True and req.tool_choice == "required"
    # Toward an Anthropic upstream: alternating turns; a thinking budget fits under
    # max_tokens and Anthropic's minimum, or thinking is not asked for.
    _, out = an.request_out(req)
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["system"] == "sys\n\nagents: none" and "thinking" not in out
    req.sampling.max_tokens = 8000
    assert an.request_out(req)[1]["thinking"] == {"type": "enabled", "budget_tokens": 4096}


def test_codex_tools_namespaces_are_flattened_and_hosted_tools_left_out() -> None:
    fn = {"type": "function", "name": "exec_command", "parameters": {"type": "object"}}
    spawn = {"type": "function", "name": "spawn", "parameters": {"type": "object"}}
    space = {"type": "namespace", "name": "multi_agent_v1", "tools": [spawn]}
    req = rs.request_in({"model": "m", "input": "x", "tools": [fn, space, {"type": "web_search"}]})
    assert [t["function"]["name"] for t in req.tools] == ["exec_command", "multi_agent_v1__spawn"]
    call = ToolCall("multi_agent_v1__spawn", {"task": "t"}, "call_1")
    whole = rs.response_out(Chunk(tool_calls=[call], finish_reason="tool_calls"), "m", "r", req)
    item = whole["output"][-1]
    assert (item["namespace"], item["name"]) == ("multi_agent_v1", "spawn")
    events = _sse_data(ResponsesEncoder("m", req).encode(Chunk(tool_calls=[call])))
    done = next(e["item"] for e in events if e["type"] == "response.output_item.done")
    assert (done["namespace"], done["name"]) == ("multi_agent_v1", "spawn")
    again = rs.request_in({"model": "m", "input": [item], "tools": [space]})
    assert again.messages[0].tool_calls == [call]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"previous_response_id": "resp_1", "input": "x"}, "previous_response_id"),
        ({"conversation": "conv_1", "input": "x"}, "conversation"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input"),
        ({"input": "x", "tools": [{"type": "custom", "name": "apply_patch"}]}, "tools"),
        ({"input": "x", "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_image", "image_url": "https://x/y.png"}],
                    }
                ]
            },
            "input",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input",
        ),
        ({"input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format"),
        ({"input": "x", "background": True}, "background"),
    ],
)
def test_responses_refusals_are_clear_400s(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        rs.request_in({"model": "m", **body})
    assert info.value.param == param and info.value.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "url", "url": "https://x"}}
                        ],
                    }
                ]
            },
            "messages",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
        ({"thinking": {"type": "sometimes"}}, "thinking"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice"),
    ],
)
def test_anthropic_refusals_are_clear_400s(body: dict[str, Any], param: str) -> None:
    base = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(BadRequest) as info:
        an.request_in({**base, **body})
    assert info.value.param == param and info.value.message


def test_what_an_anthropic_upstream_cannot_answer_is_a_400() -> None:
    with pytest.raises(BadRequest, match="JSON"):
        an.request_out(InferenceRequest(kind="chat", model="c", response_format="json"))
    with pytest.raises(BadRequest, match="embed"):
        an.request_out(InferenceRequest(kind="embed", model="c", inputs=["x"]))
    # A templated completion is one user turn; Ollama's no-limit becomes a default limit.
    gen = ot.generate_request_in({"model": "c", "prompt": "hi", "system": "be kind"})
    _, body = an.request_out(gen)
    assert body["system"] == "be kind" and body["max_tokens"] == an.DEFAULT_MAX_TOKENS
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


@pytest.mark.parametrize(
    ("effort", "think"),
    [
        ("none", False),
        ("minimal", False),
        ("low", "low"),
        ("high", "high"),
        ("xhigh", "max"),
        ("max", "max"),
    ],
)
def test_reasoning_effort_is_a_think_level_on_v1_too(effort: str, think: Any) -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    assert oa.chat_request_in({**base, "reasoning_effort": effort}).extra["think"] == think
    assert oa.chat_request_in({**base, "reasoning": {"effort": effort}}).extra["think"] == think
    with pytest.raises(BadRequest):
        oa.chat_request_in({**base, "reasoning_effort": "lots"})


def test_ollama_messages_carry_tool_call_id_and_thinking() -> None:
    raw = {"role": "tool", "content": "18C", "tool_name": "w", "tool_call_id": "call_9"}
    assert ot.message_out(ot.message_in(raw)) == raw
    said = {"role": "assistant", "content": "x", "thinking": "because"}
    assert ot.message_out(ot.message_in(said)) == said


# --- whole answers ------------------------------------------------------------------------------

call = st.builds(ToolCall, names, arguments, st.sampled_from(["call_a", "toolu_b", "c"]))
calls = st.lists(call, max_size=2)
usages = st.builds(Usage, st.integers(0, 10**6), st.integers(0, 10**6))


@st.composite
def answers(draw: st.DrawFn) -> Chunk:
    chunk = Chunk(text=draw(text), thinking=draw(text), tool_calls=draw(calls))
    chunk.finish_reason = draw(st.sampled_from(["stop", "length", "tool_calls"]))
    chunk.usage = draw(usages)
    return chunk


def essence(chunk: Chunk) -> tuple[Any, ...]:
    """What an answer says, in every family: calls make the finish ``tool_calls``."""
    finish = "tool_calls" if chunk.tool_calls else chunk.finish_reason
    if finish == "tool_calls" and not chunk.tool_calls:
        finish = "stop"  # a finish without calls is a stop in every family
    usage = chunk.usage or Usage()
    tokens = (usage.prompt_tokens, usage.completion_tokens)
    return (chunk.text, chunk.thinking, chunk.tool_calls, finish, chunk.error, tokens)


REQ = InferenceRequest(kind="chat", model="m")
WHOLE: dict[str, tuple[Callable[[Chunk], dict[str, Any]], Callable[[dict[str, Any]], Chunk]]] = {
    "responses": (lambda c: rs.response_out(c, "m", "resp_1", REQ), rs.response_in),
    "anthropic": (lambda c: an.response_out(c, "m", "msg_1"), an.response_in),
    "ollama": (lambda c: ot.chunk_out(c, "m", "chat"), ot.chunk_in),
    "openai": (lambda c: oa.chat_response_out(c, "m", "chatcmpl-1", 0), oa.response_in),
}


@PROPERTY
@given(answers(), st.sampled_from(sorted(WHOLE)))
def test_whole_answers_round_trip(chunk: Chunk, family: str) -> None:
    write, read = WHOLE[family]
    assert essence(read(wire(write(chunk)))) == essence(chunk)


def test_a_cut_answer_is_incomplete_and_max_tokens() -> None:
    chunk = Chunk(text="abc", finish_reason="length", usage=Usage(3, 5))
    response = rs.response_out(chunk, "m", "resp_1", REQ)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert an.response_out(chunk, "m", "msg_1")["stop_reason"] == "max_tokens"
    assert an.count_out(chunk) == {"input_tokens": 3}


# --- streams ------------------------------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn, natural: bool = False) -> list[Chunk]:
    """Pieces of an answer and its final chunk; ``natural``: reasoning, then text, then calls
    (the order a model answers in), else any order."""
    kinds = st.sampled_from(["text", "thinking", "calls"])
    order = draw(st.lists(kinds, max_size=6))
    if natural:
        order = sorted(order, key=["thinking", "text", "calls"].index)
    pieces = []
    for kind in order:
        if kind == "calls":
            pieces.append(Chunk(tool_calls=draw(st.lists(call, min_size=1, max_size=2))))
        elif kind == "text":
            pieces.append(Chunk(text=draw(words)))
        else:
            pieces.append(Chunk(thinking=draw(words)))
    final = Chunk(finish_reason=draw(st.sampled_from(["stop", "length"])), usage=draw(usages))
    return [*pieces, final]


def _responses_encoder() -> Encoder:
    return ResponsesEncoder("m", REQ)


STREAMS: dict[str, tuple[Callable[[], Encoder], Callable[[], Decoder]]] = {
    "responses": (_responses_encoder, ResponsesDecoder),
    "anthropic": (lambda: AnthropicEncoder("m"), AnthropicDecoder),
    "ollama": (lambda: OllamaEncoder("m", "chat"), NDJSONDecoder),
    "openai": (lambda: OpenAIChatEncoder("m", True), SSEDecoder),
}


def encoded(chunks: list[Chunk], family: str) -> bytes:
    encoder = STREAMS[family][0]()
    return b"".join(encoder.encode(c) for c in chunks) + encoder.finish()


def decoded(data: bytes, family: str, cuts: list[int]) -> list[Chunk]:
    """The chunks a decoder reads from the bytes, delivered in pieces cut at ``cuts``."""
    decoder = STREAMS[family][1]()
    out: list[Chunk] = []
    start = 0
    for cut in sorted({*cuts, len(data)}):
        out.extend(decoder.feed(data[start:cut]))
        start = cut
    return out


@PROPERTY
@given(streams(), st.sampled_from(sorted(STREAMS)), st.lists(st.integers(0, 4000), max_size=6))
def test_joined_stream_events_equal_the_whole_answer(
    chunks: list[Chunk], family: str, cuts: list[int]
) -> None:
    """Encode a stream in a family, decode it cut anywhere: the joined chunks say what the
    whole answer, written and read in that family, says."""
    whole = join(chunks)
    write, read = WHOLE[family]
    streamed = join(decoded(encoded(chunks, family), family, cuts))
    assert essence(streamed) == essence(whole) == essence(read(wire(write(whole))))


def _sse_data(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[5:]) for line in data.split(b"\n") if line.startswith(b"data:")]


def _strip_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_ids(v) for k, v in value.items() if k not in ("id", "item_id")}
    if isinstance(value, list):
        return [_strip_ids(v) for v in value]
    return value


@PROPERTY
@given(streams(natural=True))
def test_the_completed_response_is_the_whole_response(chunks: list[Chunk]) -> None:
    """``response.completed`` holds what the unstreamed answer holds, and every item was
    announced and finished at its index, as the SDK's accumulator requires."""
    events = _sse_data(encoded(chunks, "responses"))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    whole = rs.response_out(join(chunks), "m", "resp_1", REQ)
    assert _strip_ids(final["output"]) == _strip_ids(whole["output"])
    assert final["status"] == whole["status"] and final["usage"] == whole["usage"]
    added = {e["output_index"] for e in events if e["type"] == "response.output_item.added"}
    done = {
        e["output_index"]: e["item"] for e in events if e["type"] == "response.output_item.done"
    }
    assert added == set(done) == set(range(len(final["output"])))
    assert [done[i] for i in sorted(done)] == final["output"]
    assert len({e["response"]["id"] for e in events if "response" in e}) == 1


def _accumulate(events: list[dict[str, Any]]) -> dict[str, Any]:
    """An Anthropic stream folded into a message, as the SDK folds it."""
    message: dict[str, Any] = {}
    json_bufs: dict[int, str] = {}
    for e in events:
        if e["type"] == "message_start":
            message = e["message"]
        elif e["type"] == "content_block_start":
            assert e["index"] == len(message["content"])
            message["content"].append(dict(e["content_block"]))
        elif e["type"] == "content_block_delta":
            block, delta = message["content"][e["index"]], e["delta"]
            if delta["type"] == "input_json_delta":
                json_bufs[e["index"]] = json_bufs.get(e["index"], "") + delta["partial_json"]
                block["input"] = json.loads(json_bufs[e["index"]])
            else:
                kind = delta["type"].removesuffix("_delta")
                block[kind] += delta[kind]
        elif e["type"] == "message_delta":
            message.update(e["delta"])
            message["usage"] = e["usage"]
    return message


@PROPERTY
@given(streams(natural=True))
def test_the_accumulated_message_is_the_whole_message(chunks: list[Chunk]) -> None:
    events = _sse_data(encoded(chunks, "anthropic"))
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    whole = an.response_out(join(chunks), "m", "msg_1")
    streamed = _accumulate(events)
    # Thinking, text and calls come in blocks, each piece of one kind in its own block.
    for key in ("thinking", "text"):
        assert "".join(b.get(key, "") for b in streamed["content"] if b["type"] == key) == "".join(
            b.get(key, "") for b in whole["content"] if b["type"] == key
        )
    tools = [b for b in streamed["content"] if b["type"] == "tool_use"]
    assert tools == [b for b in whole["content"] if b["type"] == "tool_use"]
    assert (streamed["stop_reason"], streamed["usage"]) == (whole["stop_reason"], whole["usage"])


@pytest.mark.parametrize("family", ["anthropic", "responses"])
def test_a_failure_is_the_familys_last_event_and_ends_the_stream(family: str) -> None:
    encoder = STREAMS[family][0]()
    data = encoder.encode(Chunk(text="par")) + encoder.encode(Chunk(error="runner died"))
    framing = ANTHROPIC_SSE if family == "anthropic" else RESPONSES_SSE
    assert framing.complete(data)
    assert not framing.complete(encoder.encode(Chunk(text="more")))
    events = _sse_data(data)
    if family == "anthropic":
        assert events[-1] == {
            "type": "error",
            "error": {"type": "api_error", "message": "runner died"},
        }
    else:
        assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
        assert events[-1]["response"]["error"]["message"] == "runner died"
    chunks = decoded(data, family, [])
    assert chunks[-1].error == "runner died"


def test_event_type_reads_the_last_data_line() -> None:
    assert event_type(b'event: message_stop\ndata: {"type": "message_stop"}\n\n') == b"message_stop"
    assert event_type(b"event: ping\n") == b""
    assert not ANTHROPIC_SSE.complete(b'data: {"type":"ping"}\n\n')
