"""Stream codecs: neutral chunks → one family's bytes → (split anywhere) → neutral chunks.

Whatever the split, the decoded stream must fold (``join``) to what the original chunks fold
to, and to what the unstreamed answer says.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgarden.translate import ollama as ot
from modelgarden.translate import openai as oa
from modelgarden.translate.stream import (
    DONE,
    Decoder,
    Encoder,
    NDJSONDecoder,
    OllamaEncoder,
    OpenAIChatEncoder,
    OpenAICompletionEncoder,
    SSEDecoder,
    join,
    translate,
)
from modelgarden.types import Chunk, FinishReason, ToolCall, Usage

PROPERTY = settings(max_examples=100, deadline=None)

keys = st.text(alphabet="abcxyz_", min_size=1, max_size=5)
scalars = st.one_of(st.text(max_size=8), st.integers(-(2**53), 2**53), st.booleans())
arguments = st.dictionaries(
    keys, st.one_of(scalars, st.dictionaries(keys, scalars, max_size=3)), max_size=4
)
tool_calls = st.builds(ToolCall, st.sampled_from(["get_weather", "search", "add"]), arguments)
usages = st.builds(
    Usage,
    prompt_tokens=st.integers(0, 10**6),
    completion_tokens=st.integers(0, 10**6),
    total_duration=st.one_of(st.none(), st.integers(0, 10**12)),
    load_duration=st.one_of(st.none(), st.integers(0, 10**12)),
    prompt_eval_duration=st.one_of(st.none(), st.integers(0, 10**12)),
    eval_duration=st.one_of(st.none(), st.integers(0, 10**12)),
)
logprob_entries = st.lists(
    st.fixed_dictionaries(
        {"token": st.text(min_size=1, max_size=4), "logprob": st.floats(-50, 0)},
        optional={
            "top_logprobs": st.lists(
                st.fixed_dictionaries(
                    {"token": st.text(min_size=1, max_size=4), "logprob": st.floats(-50, 0)}
                ),
                max_size=2,
            )
        },
    ),
    max_size=2,
)


@st.composite
def answers(draw: st.DrawFn, *, calls: bool = True, logprobs: bool = False) -> list[Chunk]:
    """A streamed answer: text pieces, tool calls anywhere, a final chunk with usage.

    ``length`` is drawn only for answers without tool calls: with both, the families
    disagree (see ``test_length_with_tool_calls_reads_the_same_streamed_and_whole``).
    """
    chunks = [
        Chunk(text=t, logprobs=draw(logprob_entries) if logprobs else [])
        for t in draw(st.lists(st.text(max_size=10), max_size=8))
    ]
    made = draw(st.lists(tool_calls, max_size=3)) if calls else []
    for i, call in enumerate(made):  # some calls come with an id, some without
        call.id = draw(st.sampled_from(["", f"call_{i}"]))
    finish: FinishReason = "stop" if made else draw(st.sampled_from(["stop", "length"]))
    chunks.append(Chunk(text=draw(st.text(max_size=5)), finish_reason=finish, usage=draw(usages)))
    for call in made:
        chunks[draw(st.integers(0, len(chunks) - 1))].tool_calls.append(call)
    return chunks


def split(data: st.DataObject, blob: bytes) -> list[bytes]:
    """The bytes cut at random places (possibly inside a UTF-8 sequence or a frame)."""
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(blob)), max_size=12))))
    bounds = [0, *cuts, len(blob)]
    return [blob[a:b] for a, b in itertools.pairwise(bounds)]


def encode_all(encoder: Encoder, chunks: list[Chunk]) -> bytes:
    return b"".join(encoder.encode(c) for c in chunks) + encoder.finish()


def decode_all(decoder: Decoder, pieces: list[bytes]) -> list[Chunk]:
    return [chunk for piece in pieces for chunk in decoder.feed(piece)]


def sse_events(blob: bytes) -> list[Any]:
    """Every frame is ``data: <json>\\n\\n``; the last one is ``data: [DONE]``."""
    assert blob.endswith(DONE)
    assert blob.endswith(b"\n\n")
    frames = blob[:-2].split(b"\n\n")
    events: list[Any] = []
    for i, frame in enumerate(frames):
        assert frame.startswith(b"data: ")
        assert b"\n" not in frame
        payload = frame[len(b"data: ") :]
        if i == len(frames) - 1:
            assert payload == b"[DONE]"
        else:
            events.append(json.loads(payload))
            assert isinstance(events[-1], dict)
    return events


def without_missing_ids(calls: list[ToolCall], like: list[ToolCall]) -> list[ToolCall]:
    """``calls`` with the ids blanked where ``like`` had none (an encoder invented them)."""
    return [
        ToolCall(c.name, c.arguments, c.id if o.id else "")
        for c, o in zip(calls, like, strict=True)
    ]


# --- (a) Ollama NDJSON --------------------------------------------------------------------------


@PROPERTY
@given(answers(logprobs=True), st.data())
def test_ollama_chat_stream_survives_any_split(chunks: list[Chunk], data: st.DataObject) -> None:
    blob = encode_all(OllamaEncoder("m", "chat"), chunks)
    records = [orjson.loads(line) for line in blob.splitlines()]
    assert [r["done"] for r in records] == [False] * (len(chunks) - 1) + [True]
    assert all(r["message"]["role"] == "assistant" for r in records)

    decoded = decode_all(NDJSONDecoder(), split(data, blob))
    assert len(decoded) == len(chunks)
    streamed = join(decoded)
    assert streamed == join(chunks)
    # ... and what the unstreamed answer (one whole record) says.
    whole = ot.chunk_in(json.loads(json.dumps(ot.chunk_out(join(chunks), "m", "chat"))))
    assert streamed == whole


@PROPERTY
@given(answers(calls=False, logprobs=True), st.data())
def test_ollama_generate_stream_survives_any_split(
    chunks: list[Chunk], data: st.DataObject
) -> None:
    blob = encode_all(OllamaEncoder("m", "generate"), chunks)
    assert all("response" in orjson.loads(line) for line in blob.splitlines())
    decoded = decode_all(NDJSONDecoder(), split(data, blob))
    assert join(decoded) == join(chunks)
    assert join(decoded) == ot.chunk_in(ot.chunk_out(join(chunks), "m", "generate"))


def test_ndjson_decoder_waits_for_the_end_of_a_line() -> None:
    decoder = NDJSONDecoder()
    line = b'{"model":"m","message":{"role":"assistant","content":"h\xc3\xa9"},"done":false}\n'
    assert decoder.feed(line[:40]) == []
    assert decoder.feed(line[40:-1]) == []
    assert decoder.feed(line[-1:] + b"\n  \n") == [Chunk(text="hé")]
    assert decoder.feed(b'{"error":"boom"}\n') == [Chunk(error="boom")]


def test_length_with_tool_calls_reads_the_same_streamed_and_whole() -> None:
    """One answer, cut short by the length limit after a tool call was streamed.

    Streamed, ``join`` keeps ``length``; the same answer as one whole record comes back as
    ``tool_calls`` (``ot.chunk_in`` lets tool calls override ``length``). The two forms of
    one answer must agree.
    """
    call = ToolCall("get_weather", {"city": "Paris"}, "call_1")
    chunks = [
        Chunk(tool_calls=[call]),
        Chunk(finish_reason="length", usage=Usage(3, 4)),
    ]
    streamed = join(decode_all(NDJSONDecoder(), [encode_all(OllamaEncoder("m", "chat"), chunks)]))
    whole = ot.chunk_in(ot.chunk_out(join(chunks), "m", "chat"))
    assert streamed.finish_reason == whole.finish_reason


# --- (b) OpenAI chat SSE ------------------------------------------------------------------------


@PROPERTY
@given(answers(), st.booleans(), st.data())
def test_openai_chat_stream_survives_any_split(
    chunks: list[Chunk], include_usage: bool, data: st.DataObject
) -> None:
    encoder = OpenAIChatEncoder("m", include_usage)
    blob = encode_all(encoder, chunks)
    events = sse_events(blob)

    with_choices = [e for e in events if e["choices"]]
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert {e["id"] for e in events} == {encoder.id}
    assert with_choices[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in e["choices"][0]["delta"] for e in with_choices[1:])
    finishes = [e["choices"][0]["finish_reason"] for e in with_choices]
    original = join(chunks)
    assert [f for f in finishes if f is not None] == [original.finish_reason]
    assert finishes[-1] == original.finish_reason
    usage_frames = [e for e in events if "usage" in e]
    if include_usage:
        assert usage_frames == [events[-1]]
        assert usage_frames[0]["choices"] == []
        assert usage_frames[0]["usage"] == oa.usage_out(original.usage)
    else:
        assert usage_frames == []
    indices = [
        c["index"] for e in with_choices for c in e["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert indices == list(range(len(original.tool_calls)))

    decoded = decode_all(SSEDecoder(), split(data, blob))
    assert decoded[-1].final
    assert all(not c.final for c in decoded[:-1])
    streamed = join(decoded)
    assert streamed.text == original.text
    assert streamed.finish_reason == original.finish_reason
    assert without_missing_ids(streamed.tool_calls, original.tool_calls) == original.tool_calls
    ids = [c.id for c in streamed.tool_calls]
    assert all(ids) and len(set(ids)) == len(ids)
    if include_usage:
        assert original.usage is not None
        assert streamed.usage == Usage(
            original.usage.prompt_tokens, original.usage.completion_tokens
        )


def test_final_chunk_with_tool_calls_finishes_with_tool_calls() -> None:
    encoder = OpenAIChatEncoder("m", include_usage=False)
    call = ToolCall("add", {"a": 1, "b": 2})
    blob = encode_all(
        encoder, [Chunk(text="Let me add."), Chunk(tool_calls=[call], finish_reason="stop")]
    )
    events = sse_events(blob)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Let me add."}
    (sent,) = events[1]["choices"][0]["delta"]["tool_calls"]
    assert sent["index"] == 0
    assert sent["type"] == "function"
    assert sent["function"] == {"name": "add", "arguments": json.dumps({"a": 1, "b": 2})}
    assert events[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }


def test_sse_decoder_joins_tool_call_fragments_by_index() -> None:
    def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
        event = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(event).encode() + b"\n\n"

    def call(index: int, **fields: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, **fields}]}

    blob = (
        b": keep-alive comment\n\n"
        + frame({"role": "assistant", "content": ""})
        + frame(call(0, id="call_x", function={"name": "get_", "arguments": '{"ci'}))
        + frame(call(1, id="call_y", function={"name": "add", "arguments": "{}"}))
        + frame(call(0, function={"name": "weather", "arguments": 'ty": "Oslo"}'}))
        + frame({}, "tool_calls")
        + b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}\n\n'
        + DONE
    )
    decoded = decode_all(SSEDecoder(), [blob[i : i + 7] for i in range(0, len(blob), 7)])
    assert decoded == [
        Chunk(
            tool_calls=[
                ToolCall("get_weather", {"city": "Oslo"}, "call_x"),
                ToolCall("add", {}, "call_y"),
            ],
            finish_reason="tool_calls",
            usage=Usage(5, 7),
        )
    ]


def test_sse_error_event_becomes_an_error_chunk() -> None:
    blob = OpenAIChatEncoder("m", True).encode(Chunk(error="boom"))
    assert SSEDecoder().feed(blob) == [Chunk(error="boom")]
    assert SSEDecoder().feed(b'data: {"error": "plain"}\n\n') == [Chunk(error="plain")]


def test_reasoning_rides_as_reasoning_content_and_comes_back_as_thinking() -> None:
    chunks = [Chunk(thinking="2+2"), Chunk(text="4"), Chunk(finish_reason="stop")]
    blob = encode_all(OpenAIChatEncoder("m", False), chunks)
    events = sse_events(blob)
    assert events[0]["choices"][0]["delta"]["reasoning_content"] == "2+2"
    back = [c for c in SSEDecoder().feed(blob) if not c.final]
    assert [(c.thinking, c.text) for c in back] == [("2+2", ""), ("", "4")]
    assert join(chunks).thinking == "2+2"
    record = json.loads(OllamaEncoder("m", "chat").encode(Chunk(thinking="2+2")))
    assert record["message"]["thinking"] == "2+2"


def test_chat_stream_logprobs_ride_on_the_content_delta() -> None:
    entries = [{"token": "hi", "logprob": -0.5, "top_logprobs": []}]
    events = sse_events(
        encode_all(
            OpenAIChatEncoder("m", False),
            [Chunk(text="hi", logprobs=entries), Chunk(finish_reason="stop")],
        )
    )
    assert events[0]["choices"][0]["logprobs"] == oa.logprobs_out(entries)
    assert events[-1]["choices"][0]["logprobs"] is None


# --- (c) OpenAI completion SSE ------------------------------------------------------------------


@PROPERTY
@given(answers(calls=False), st.booleans(), st.data())
def test_openai_completion_stream_survives_any_split(
    chunks: list[Chunk], include_usage: bool, data: st.DataObject
) -> None:
    encoder = OpenAICompletionEncoder("m", include_usage)
    blob = encode_all(encoder, chunks)
    events = sse_events(blob)
    original = join(chunks)
    assert all(e["object"] == "text_completion" for e in events)
    assert {e["id"] for e in events} == {encoder.id}
    texts = "".join(c["text"] for e in events for c in e["choices"])
    assert texts == original.text
    finishes = [c["finish_reason"] for e in events for c in e["choices"]]
    assert [f for f in finishes if f is not None] == [original.finish_reason]
    assert ("usage" in events[-1]) is include_usage

    decoded = decode_all(SSEDecoder(), split(data, blob))
    streamed = join(decoded)
    assert streamed.text == original.text
    assert streamed.finish_reason == original.finish_reason
    assert streamed.tool_calls == []
    if include_usage:
        assert original.usage is not None
        assert streamed.usage == Usage(
            original.usage.prompt_tokens, original.usage.completion_tokens
        )


def test_completion_stream_logprobs_use_the_legacy_shape() -> None:
    entries = [{"token": "a", "logprob": -1.0}, {"token": "bc", "logprob": -2.0}]
    events = sse_events(
        encode_all(
            OpenAICompletionEncoder("m", False),
            [Chunk(text="abc", logprobs=entries), Chunk(finish_reason="length")],
        )
    )
    assert events[0]["choices"][0]["logprobs"] == oa.completion_logprobs_out(entries)
    assert events[-1]["choices"][0]["finish_reason"] == "length"


# --- cross-family streams and translate() -------------------------------------------------------


class Body:
    """An upstream body: async byte pieces, remembering whether it was closed."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.closed = False
        self._next = iter(pieces)

    def __aiter__(self) -> Body:
        return self

    async def __anext__(self) -> bytes:
        try:
            return next(self._next)
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self.closed = True


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([part async for part in stream])


async def test_translate_ollama_to_openai_chat_appends_done() -> None:
    chunks = [
        Chunk(text="Hel"),
        Chunk(text="lo"),
        Chunk(tool_calls=[ToolCall("search", {"q": "x"})]),
        Chunk(finish_reason="stop", usage=Usage(2, 3)),
    ]
    blob = encode_all(OllamaEncoder("m", "chat"), chunks)
    body = Body([blob[i : i + 5] for i in range(0, len(blob), 5)])
    out = await collect(translate(body, NDJSONDecoder(), OpenAIChatEncoder("m", True)))
    assert body.closed
    assert out.endswith(DONE)
    assert out.count(DONE) == 1
    sse_events(out)
    streamed = join(SSEDecoder().feed(out))
    assert streamed.text == "Hello"
    assert [(c.name, c.arguments) for c in streamed.tool_calls] == [("search", {"q": "x"})]
    assert streamed.finish_reason == "tool_calls"
    assert streamed.usage == Usage(2, 3)


async def test_translate_openai_to_ollama_has_no_trailer() -> None:
    chunks = [Chunk(text="a"), Chunk(text="b"), Chunk(finish_reason="length", usage=Usage(1, 2))]
    blob = encode_all(OpenAICompletionEncoder("m", True), chunks)
    body = Body([blob[:3], blob[3:]])
    out = await collect(translate(body, SSEDecoder(), OllamaEncoder("m", "generate")))
    assert body.closed
    records = [orjson.loads(line) for line in out.splitlines()]
    assert "".join(r["response"] for r in records) == "ab"
    assert records[-1]["done"] is True
    assert records[-1]["done_reason"] == "length"
    assert (records[-1]["prompt_eval_count"], records[-1]["eval_count"]) == (1, 2)
    assert out.endswith(b"\n")


async def test_translate_closes_the_upstream_and_adds_the_trailer_on_an_empty_body() -> None:
    body = Body([])
    out = await collect(translate(body, SSEDecoder(), OpenAICompletionEncoder("m", False)))
    assert out == DONE
    assert body.closed


async def test_translate_closes_the_upstream_when_the_client_goes_away() -> None:
    body = Body([b'{"model":"m","response":"x","done":false}\n'] * 3)
    stream = translate(body, NDJSONDecoder(), OpenAICompletionEncoder("m", False))
    first = await stream.__anext__()
    assert b'"text":"x"' in first
    assert isinstance(stream, AsyncGenerator)  # translate() is an async generator
    await stream.aclose()
    assert body.closed


@pytest.mark.parametrize("kind", ["chat", "generate"])
def test_ollama_encoder_records_are_single_lines(kind: str) -> None:
    blob = OllamaEncoder("m", kind).encode(Chunk(text="line one\nline two"))
    assert blob.count(b"\n") == 1
    assert blob.endswith(b"\n")
    assert OllamaEncoder("m", kind).finish() == b""
