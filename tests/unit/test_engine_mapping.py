"""The engine's protocol both ways, as pure functions: Ollama requests to ``/completion``
bodies, and the engine's streamed events to Ollama records."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from modelgarden.engine.client import EngineClient
from modelgarden.engine.ollama import keep_to_fit
from modelgarden.engine.records import REPEAT_LIMIT, RecordStream, Tools, join
from modelgarden.engine.request import LAYOUT, closed, completion_body, sampling
from modelgarden.errors import BadRequest, RunnerFailed
from modelgarden.model_options import validate_options
from modelgarden.templates.thinking import ThinkingParser

# --- requests ---------------------------------------------------------------------------------


def test_ollamas_defaults_are_sent_explicitly() -> None:
    out = sampling({}, num_ctx=4096)
    assert out["temperature"] == 0.8 and out["top_k"] == 40 and out["top_p"] == 0.9
    assert out["min_p"] == 0.0 and out["repeat_penalty"] == 1.0 and out["n_keep"] == 4
    assert out["seed"] == 0xFFFFFFFF  # -1: a random seed
    assert out["n_predict"] == 10 * 4096  # open-ended, but bounded as Ollama bounds it
    assert "stop" not in out


def test_options_map_to_the_engines_names() -> None:
    options = {"num_predict": 7, "seed": 42, "temperature": 0.0, "stop": ["\n", ""], "num_keep": 0}
    out = sampling(options, num_ctx=2048)
    assert out["n_predict"] == 7 and out["seed"] == 42 and out["temperature"] == 0.0
    assert out["stop"] == ["\n"] and out["n_keep"] == 0


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"top_k": 1e300}, "top_k"),
        ({"temperature": 1e39}, "temperature"),
        ({"seed": 2**40}, "seed"),
    ],
)
def test_numbers_the_engine_cannot_hold_are_a_400_naming_the_option(
    options: dict[str, Any], name: str
) -> None:
    with pytest.raises(BadRequest, match=f'option "{name}" is out of range') as info:
        validate_options(options)
    assert info.value.param == name


def test_format_becomes_a_json_schema_laid_out_as_json_dumps_does() -> None:
    assert completion_body("x", {}, num_ctx=64, fmt="json")["json_schema"] == {
        "type": "object",
        "x-guidance": LAYOUT,
    }
    own = {"type": "array", "x-guidance": {"whitespace_flexible": True}}
    assert completion_body("x", {}, num_ctx=64, fmt=own)["json_schema"] == own
    with pytest.raises(BadRequest, match="format must be"):
        completion_body("x", {}, num_ctx=64, fmt=["nope"])


def test_objects_with_listed_properties_take_no_others_unless_the_schema_says_so() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "integer"}}},
            "c": {"type": "array", "items": {"properties": {"d": {}}}},
            "e": {"type": "object", "properties": {}, "additionalProperties": True},
        },
        "$defs": {"f": {"anyOf": [{"properties": {"g": {}}}, {"type": "string"}]}},
    }
    out = closed(schema)
    assert out["additionalProperties"] is False
    assert out["properties"]["a"]["additionalProperties"] is False
    assert out["properties"]["c"]["items"]["additionalProperties"] is False
    assert out["properties"]["e"]["additionalProperties"] is True
    assert out["$defs"]["f"]["anyOf"][0]["additionalProperties"] is False
    assert "additionalProperties" not in out["$defs"]["f"]["anyOf"][1]
    assert "additionalProperties" not in schema  # the request's own schema is left alone


def test_images_travel_beside_the_prompt_and_logprobs_ask_for_probabilities() -> None:
    image = base64.b64encode(b"\x89PNG...").decode()
    body = completion_body(
        "<m>\ndescribe", {}, num_ctx=64, images=[image], logprobs=True, top_logprobs=3
    )
    assert body["prompt"] == {"prompt_string": "<m>\ndescribe", "multimodal_data": [image]}
    assert body["n_probs"] == 3 and body["stream"] is True and body["cache_prompt"] is True


def test_cutting_a_prompt_keeps_the_start_and_frees_half_the_context() -> None:
    tokens = list(range(100))
    cut = keep_to_fit(tokens, num_ctx=64, num_keep=4)
    assert cut[:4] == [0, 1, 2, 3] and cut[-1] == 99
    assert len(cut) == 64 - (64 - 4) // 2
    assert keep_to_fit(tokens[:10], num_ctx=64, num_keep=4) == tokens[:10]


# --- records ----------------------------------------------------------------------------------


def ev(content: str = "", **extra: Any) -> dict[str, Any]:
    return {"content": content, "stop": False, **extra}


FINAL = {
    "content": "",
    "stop": True,
    "stop_type": "eos",
    "timings": {
        "cache_n": 2,
        "prompt_n": 10,
        "prompt_ms": 5.5,
        "predicted_n": 3,
        "predicted_ms": 30,
    },
}


def feed_all(stream: RecordStream, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [record for event in events for record in stream.feed(event)]


def test_generate_records_and_counters_from_the_engines_timings() -> None:
    stream = RecordStream(model="m", chat=False, start_ns=0, load_ns=7, context=[1, 2])
    records = feed_all(
        stream, [ev("Hel", tokens=[5]), ev("lo", tokens=[6]), {**FINAL, "tokens": [7]}]
    )
    assert [r["response"] for r in records] == ["Hel", "lo", ""]
    final = records[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["prompt_eval_count"] == 12 and final["prompt_eval_duration"] == 5_500_000
    assert final["eval_count"] == 3 and final["eval_duration"] == 30_000_000
    assert final["load_duration"] == 7 and final["context"] == [1, 2, 5, 6, 7]


def test_a_length_stop_and_no_context_in_raw_mode() -> None:
    stream = RecordStream(model="m", chat=False, start_ns=0)
    (final,) = stream.feed({**FINAL, "stop_type": "limit"})
    assert final["done_reason"] == "length" and "context" not in final


def test_chat_reasoning_comes_apart_from_the_answer() -> None:
    stream = RecordStream(
        model="m", chat=True, start_ns=0, thinking=ThinkingParser("<think>", "</think>")
    )
    records = feed_all(stream, [ev("<think>I"), ev(" think</th"), ev("ink>The answer"), FINAL])
    whole = join(records)
    assert whole["message"] == {"role": "assistant", "content": "The answer", "thinking": "I think"}
    assert all("<think>" not in (r["message"]["content"]) for r in records)


def test_generate_reasoning_is_its_own_field() -> None:
    parser = ThinkingParser("<think>", "</think>", opened=True)
    stream = RecordStream(model="m", chat=False, start_ns=0, thinking=parser)
    whole = join(feed_all(stream, [ev("hmm</think>ok"), FINAL]))
    assert whole["thinking"] == "hmm" and whole["response"] == "ok"


TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]


def test_a_tool_call_is_held_back_and_parsed() -> None:
    stream = RecordStream(model="m", chat=True, start_ns=0, tools=Tools(TOOLS))
    text = '<tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call>'
    records = feed_all(stream, [ev(text[:9]), ev(text[9:]), FINAL])
    assert [r["message"]["content"] for r in records[:-1]] == [""]
    assert records[0]["message"]["tool_calls"] == [
        {"function": {"name": "weather", "arguments": {"city": "Oslo"}}}
    ]


def test_prose_is_released_as_soon_as_it_cannot_be_a_call() -> None:
    stream = RecordStream(model="m", chat=True, start_ns=0, tools=Tools(TOOLS))
    first = stream.feed(ev("Sure"))
    assert [r["message"]["content"] for r in first] == ["Sure"]
    assert [r["message"]["content"] for r in stream.feed(ev(", here"))] == [", here"]


def test_logprobs_in_ollamas_shape() -> None:
    stream = RecordStream(model="m", chat=False, start_ns=0, logprobs=True, top_logprobs=1)
    probs = [
        {
            "id": 5,
            "token": "Hi",
            "bytes": [72, 105],
            "logprob": -0.1,
            "top_logprobs": [{"id": 5, "token": "Hi", "bytes": [72, 105], "logprob": -0.1}],
        }
    ]
    (record,) = stream.feed(ev("Hi", completion_probabilities=probs))
    assert record["logprobs"] == [
        {
            "token": "Hi",
            "logprob": -0.1,
            "bytes": [72, 105],
            "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}],
        }
    ]


def test_an_answer_stuck_on_one_piece_is_ended_as_ollama_ends_it() -> None:
    stream = RecordStream(model="m", chat=False, start_ns=0)
    stuck = [stream.stuck(ev(" the")) for _ in range(REPEAT_LIMIT + 1)]
    assert stuck[:REPEAT_LIMIT] == [False] * REPEAT_LIMIT and stuck[-1] is True
    fresh = RecordStream(model="m", chat=False, start_ns=0)
    assert not any(fresh.stuck(ev(t)) for t in [" a", " b"] * REPEAT_LIMIT)
    for _ in range(3):
        stream.feed(ev(" the"))
    (final,) = stream.cut()
    assert final["done"] is True and final["done_reason"] == "stop" and final["eval_count"] == 3


class _Answer:
    """A runner's streamed ``/completion`` answer: one final event."""

    status = 200

    def __init__(self) -> None:
        async def lines() -> AsyncIterator[bytes]:
            yield b'data: {"content": "hi", "stop": true}\n'

        self.content = lines()

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Pool:
    """A connection pool whose first ``failures`` connections the runner had closed."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.posts = 0

    async def post(self, url: str, **_: object) -> _Answer:
        self.posts += 1
        if self.posts <= self.failures:
            raise aiohttp.ClientOSError(None, "Can not write request body for " + url)
        return _Answer()


async def test_a_pooled_connection_the_runner_closed_is_tried_once_more() -> None:
    pool = _Pool(failures=1)
    client = EngineClient(pool, "http://127.0.0.1:9")  # type: ignore[arg-type]
    events = [e async for e in await client.completion({"prompt": "hi"})]
    assert events == [{"content": "hi", "stop": True}] and pool.posts == 2
    dead = _Pool(failures=2)  # twice: the runner is gone, not a stale connection
    with pytest.raises(RunnerFailed, match=r"not answering: .*Can not write request body"):
        await EngineClient(dead, "http://127.0.0.1:9").completion({})  # type: ignore[arg-type]
    assert dead.posts == 2
