"""The /v1 API with the official ``openai`` Python client, on the real default model."""

from __future__ import annotations

import base64
import json
import math
import time
from typing import TypedDict, cast

import httpx
import numpy as np
import ollama
import openai
import pytest
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from tests.conftest import DEFAULT_MODEL, GardenServer

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


class Sampling(TypedDict):
    temperature: float
    seed: int


GREEDY: Sampling = {"temperature": 0, "seed": 42}


@pytest.fixture(scope="module")
def client(garden: GardenServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=garden.url + "/v1", api_key="unused", max_retries=0)


def test_chat_streamed_equals_whole(client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Name three colours."}
    ]
    whole = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=messages, max_tokens=24, **GREEDY
    )
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert whole.usage is not None and whole.usage.completion_tokens <= 24
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    stream = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=messages,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
        **GREEDY,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == [choice.finish_reason]
    usage = [c.usage for c in chunks if c.usage]
    assert len(usage) == 1 and usage[0].completion_tokens == whole.usage.completion_tokens


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "What is the weather in Paris?"}
    ]
    reply = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=messages,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        **GREEDY,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str)
    assert call.id.startswith("call_")
    messages += [
        # the reply's message as the dict the SDK's own models dump to
        cast(ChatCompletionAssistantMessageParam, choice.message.model_dump(exclude_none=True)),
        {"role": "tool", "tool_call_id": call.id, "content": "22 degrees and sunny"},
    ]
    answer = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=messages,
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=24,
        **GREEDY,
    )
    assert answer.choices[0].message.content
    assert not answer.choices[0].message.tool_calls


def test_streamed_tool_call(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[WEATHER],
        tool_choice="required",
        stream=True,
        **GREEDY,
    )
    chunks = list(stream)
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert [tc.function.name if tc.function else None for tc in calls] == ["get_weather"]
    function = calls[0].function
    assert function is not None and function.arguments is not None
    assert json.loads(function.arguments)["city"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_json_schema_response_parses(client: openai.OpenAI) -> None:
    schema: dict[str, object] = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    reply = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema},
        },
        **GREEDY,
    )
    data = json.loads(reply.choices[0].message.content or "")
    assert isinstance(data["name"], str) and isinstance(data["age"], int)
    obj = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Two fruits as JSON."}],
        response_format={"type": "json_object"},
        max_tokens=60,
        **GREEDY,
    )
    assert isinstance(json.loads(obj.choices[0].message.content or ""), dict)


def test_completions(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=DEFAULT_MODEL, prompt="1, 2, 3, 4,", max_tokens=6, **GREEDY
    )
    assert " 5" in reply.choices[0].text
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 6
    stream = client.completions.create(
        model=DEFAULT_MODEL, prompt="1, 2, 3, 4,", max_tokens=6, stream=True, **GREEDY
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) == reply.choices[0].text


def test_embeddings_float_and_base64_agree(client: openai.OpenAI, garden: GardenServer) -> None:
    floats = client.embeddings.create(
        model=DEFAULT_MODEL, input=["a cat", "a dog"], encoding_format="float"
    )
    assert [d.index for d in floats.data] == [0, 1]
    vector = floats.data[0].embedding
    assert len(vector) == 576 and math.isclose(sum(x * x for x in vector), 1.0, rel_tol=1e-3)
    raw = httpx.post(
        garden.url + "/v1/embeddings",
        json={"model": DEFAULT_MODEL, "input": ["a cat", "a dog"], "encoding_format": "base64"},
        timeout=60,
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, np.asarray(vector, dtype=np.float32))
    short = client.embeddings.create(model=DEFAULT_MODEL, input="a cat", dimensions=32)
    assert len(short.data[0].embedding) == 32
    assert floats.usage.prompt_tokens > 0


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert DEFAULT_MODEL in ids
    model = client.models.retrieve(DEFAULT_MODEL)
    assert model.id == DEFAULT_MODEL and model.owned_by == "library"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_errors_are_openai_shaped(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.code == "model_not_found"
    bad_requests: list[dict[str, object]] = [
        {"n": 2},
        {"messages": []},
        {"tool_choice": "sometimes"},
        {"response_format": {"type": "xml"}},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                }
            ]
        },
    ]
    for extra in bad_requests:
        body: dict[str, object] = {
            "model": DEFAULT_MODEL,
            "messages": [{"role": "user", "content": "x"}],
        }
        body.update(extra)
        with pytest.raises(openai.BadRequestError) as bad:
            # bodies the SDK's types refuse, on purpose: the gateway must answer them with a 400
            client.chat.completions.create(**body)  # type: ignore[call-overload]
        assert isinstance(bad.value.body, dict) and bad.value.body.get("message")


def test_logprobs(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=3,
        logprobs=True,
        top_logprobs=2,
        **GREEDY,
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None
    content = logprobs.content
    assert content is not None and len(content) == 3
    first = content[0]
    assert first.logprob <= 0 and len(first.top_logprobs) == 2
    # greedy decoding picks the most likely token
    assert first.token == first.top_logprobs[0].token


def test_v1_honours_keep_alive_and_keeps_models_loaded(
    client: openai.OpenAI, garden: GardenServer
) -> None:
    native = ollama.Client(host=garden.url)
    client.chat.completions.create(
        model=DEFAULT_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
    )
    assert DEFAULT_MODEL in {m.model for m in native.ps().models}  # /v1 loads and keeps it
    client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=1,
        extra_body={"keep_alive": 0},
    )
    deadline = time.monotonic() + 5
    while DEFAULT_MODEL in {m.model for m in native.ps().models} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert DEFAULT_MODEL not in {m.model for m in native.ps().models}, "keep_alive 0 must unload"
