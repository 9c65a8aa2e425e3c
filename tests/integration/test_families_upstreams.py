"""The Responses and Anthropic APIs on every kind of upstream, with the official SDKs: a
second gateway as an Ollama upstream (translated to /api/chat, and relayed as bytes when
configured to speak the families), the OpenRouter stand-in as an OpenAI upstream, and the
Anthropic stand-in (recorded shapes) as an ``anthropic`` upstream behind every client API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest
from anthropic.types import Message, MessageParam, ToolParam
from openai.types.chat import ChatCompletionMessageParam
from openai.types.responses import FunctionToolParam

from tests.anthropic_stub import AFTER_TOOL, TEXT, AnthropicStub
from tests.conftest import DEFAULT_MODEL, GardenServer, scrape, start_server, stop_and_check, value
from tests.openrouter_stub import OpenRouterStub

OR_KEY = "sk-or-test-key"
ANT_KEY = "sk-ant-test-key"
LLAMA = "meta-llama/llama-3.1-8b-instruct"
CLAUDE = "claude-sonnet-4-5-20250929"
HI: list[MessageParam] = [{"role": "user", "content": "Say hello."}]
#: HI for the OpenAI client's chat completions
HI_CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
GREEDY = {"temperature": 0}
CITY: dict[str, object] = {"type": "object", "properties": {"city": {"type": "string"}}}
#: A function tool as clients send it, without "strict": the SDK's FunctionToolParam requires
#: that key, the API does not (and nothing here reads it).
WEATHER_FN: FunctionToolParam = {  # type: ignore[typeddict-item]
    "type": "function",
    "name": "get_weather",
    "description": "Get the weather",
    "parameters": CITY,
}
CLAUDE_WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "Get the weather",
    "input_schema": CITY,
}


def text_of(message: Message) -> str:
    """The text of a message's first block, which the test expects to be a text block."""
    block = message.content[0]
    assert block.type == "text"
    return block.text


@dataclass
class Upstreams:
    """The front gateway and what stands behind it."""

    front: GardenServer
    garden: GardenServer
    openrouter: OpenRouterStub
    claude: AnthropicStub

    def anthropic(self, key: str = "client-secret", **extra: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.front.url, api_key=key, max_retries=0, **extra)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.front.url + "/v1", api_key="client-key", max_retries=0)


@pytest.fixture(scope="module")
def up(garden: GardenServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstreams]:
    openrouter = OpenRouterStub(OR_KEY).start()
    claude = AnthropicStub(ANT_KEY).start()
    root: Path = tmp_path_factory.mktemp("front")
    toml = root / "garden.toml"
    toml.write_text(f"""
default_model = ""
[[backends]]
name = "upstream"
kind = "ollama"
urls = ["{garden.url}"]
allow = ["{DEFAULT_MODEL}"]

[[backends]]
name = "relaying"
kind = "ollama"
urls = ["{garden.url}"]
apis = ["ollama", "openai", "responses", "anthropic"]
aliases = {{ "relayed" = "{DEFAULT_MODEL}" }}

[[backends]]
name = "openrouter"
kind = "openai"
urls = ["{openrouter.url}"]
api_key_env = "TEST_OPENROUTER_KEY"
models = ["{LLAMA}"]

[[backends]]
name = "claude"
kind = "anthropic"
urls = ["{claude.url}"]
api_key_env = "TEST_ANTHROPIC_KEY"
retries = 0
""")
    front = start_server(
        root, GARDEN_CONFIG=str(toml), TEST_OPENROUTER_KEY=OR_KEY, TEST_ANTHROPIC_KEY=ANT_KEY
    )
    yield Upstreams(front, garden, openrouter, claude)
    stop_and_check(front)
    openrouter.stop()
    claude.stop()


def _upstream_requests(up: Upstreams, api: str, endpoint: str) -> float:
    return value(scrape(up.garden), "garden_requests_total", api=api, endpoint=endpoint)


# --- an Ollama upstream: translated, and relayed -------------------------------------------------


def test_messages_through_an_ollama_upstream_say_what_the_model_says(up: Upstreams) -> None:
    direct = anthropic.Anthropic(base_url=up.garden.url, api_key="x", max_retries=0)
    want = direct.messages.create(
        model=DEFAULT_MODEL, max_tokens=12, messages=HI, extra_body=GREEDY
    )
    client = up.anthropic()
    chats = _upstream_requests(up, "ollama", "/api/chat")
    whole = client.messages.create(
        model=DEFAULT_MODEL, max_tokens=12, messages=HI, extra_body=GREEDY
    )
    assert text_of(whole) == text_of(want)
    assert _upstream_requests(up, "ollama", "/api/chat") == chats + 1  # translated
    with client.messages.stream(
        model=DEFAULT_MODEL,
        max_tokens=12,
        messages=HI,
        extra_body=GREEDY,
    ) as stream:
        assert "".join(stream.text_stream) == text_of(want)
    count = client.messages.count_tokens(model=DEFAULT_MODEL, messages=HI)
    assert count.input_tokens == want.usage.input_tokens
    relayed = _upstream_requests(up, "anthropic", "/v1/messages")
    again = client.messages.create(model="relayed", max_tokens=12, messages=HI, extra_body=GREEDY)
    assert text_of(again) == text_of(want)
    assert _upstream_requests(up, "anthropic", "/v1/messages") == relayed + 1  # bytes relayed
    with client.messages.stream(
        model="relayed",
        max_tokens=12,
        messages=HI,
        extra_body=GREEDY,
    ) as stream:
        assert text_of(stream.get_final_message()) == text_of(want)
    assert (
        client.messages.count_tokens(model="relayed", messages=HI).input_tokens
        == count.input_tokens
    )


def test_thinking_asked_of_a_model_that_cannot_think_upstream_is_dropped(up: Upstreams) -> None:
    """The upstream refuses think for smollm2 (Ollama's 400); a family whose clients ask
    every model to think gets its answer without, as from a local model."""
    refusals = value(scrape(up.garden), "garden_requests_total", endpoint="/api/chat", status="400")
    reply = up.anthropic().messages.create(
        model=DEFAULT_MODEL,
        max_tokens=4,
        messages=HI,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    assert [b.type for b in reply.content] == ["text"]
    response = up.openai().responses.create(
        model=DEFAULT_MODEL, input="hi", reasoning={"effort": "low"}, max_output_tokens=4
    )
    assert [item.type for item in response.output] == ["message"]
    after = value(scrape(up.garden), "garden_requests_total", endpoint="/api/chat", status="400")
    # The first was refused upstream, then sent without think; the backend remembers the
    # refusal, so the second went once, without think.
    assert after == refusals + 1


def test_responses_through_an_ollama_upstream(up: Upstreams) -> None:
    direct = openai.OpenAI(base_url=up.garden.url + "/v1", api_key="x", max_retries=0)
    want = direct.responses.create(
        model=DEFAULT_MODEL, input="hi", max_output_tokens=8, temperature=0
    )
    client = up.openai()
    for model in (DEFAULT_MODEL, "relayed"):
        whole = client.responses.create(model=model, input="hi", max_output_tokens=8, temperature=0)
        assert whole.output_text == want.output_text
        events = list(
            client.responses.create(
                model=model, input="hi", max_output_tokens=8, temperature=0, stream=True
            )
        )
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert deltas == want.output_text and events[-1].type == f"response.{want.status}"
    assert _upstream_requests(up, "responses", "/v1/responses") >= 2  # the relayed ones


# --- an OpenAI-compatible upstream (the OpenRouter stand-in) ------------------------------------


def test_responses_and_messages_on_an_openai_upstream(up: Upstreams) -> None:
    client = up.openai()
    whole = client.responses.create(model=LLAMA, input="hi")
    assert whole.output_text == "Hello from the stand-in."
    assert whole.usage is not None and (whole.usage.input_tokens, whole.usage.output_tokens) == (
        12,
        6,
    )
    events = list(client.responses.create(model=LLAMA, input="hi", stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas.strip() == "Hello from the stand-in." and events[-1].type == "response.completed"
    called = client.responses.create(model=LLAMA, input="weather?", tools=[WEATHER_FN])
    call = next(item for item in called.output if item.type == "function_call")
    assert call.call_id == "call_abc123" and json.loads(call.arguments) == {"city": "Paris"}
    sent = up.openrouter.requests[-1]["body"]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    claude = up.anthropic()
    message = claude.messages.create(model=LLAMA, max_tokens=20, messages=HI)
    assert text_of(message) == "Hello from the stand-in."
    with claude.messages.stream(
        model=LLAMA,
        max_tokens=20,
        messages=HI,
        tools=[CLAUDE_WEATHER],
    ) as stream:
        final = stream.get_final_message()
    use = final.content[-1]
    assert final.stop_reason == "tool_use" and use.type == "tool_use"
    assert use.input == {"city": "Paris"}
    sent_headers = [
        r["headers"].get("Authorization") for r in up.openrouter.requests if "body" in r
    ]
    assert all(h == f"Bearer {OR_KEY}" for h in sent_headers)


# --- an Anthropic upstream (the recorded-shapes stand-in) ---------------------------------------


def test_anthropic_clients_are_relayed_with_the_gateways_key(up: Upstreams) -> None:
    client = up.anthropic(default_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
    whole = client.messages.create(model=CLAUDE, max_tokens=64, messages=HI)
    assert whole.id == "msg_01XFDUDYJgAACzvnptvVoYEL"  # Anthropic's own answer, bytes relayed
    assert text_of(whole) == TEXT and whole.usage.input_tokens == 12
    with client.messages.stream(
        model=CLAUDE,
        max_tokens=4096,
        messages=HI,
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    thinking = final.content[0]
    assert thinking.type == "thinking"
    assert thinking.signature == "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"
    count = client.messages.count_tokens(model=CLAUDE, messages=HI)
    assert count.input_tokens == 14
    seen = [r["headers"] for r in up.claude.requests if r["path"].startswith("/v1/messages")]
    assert seen and all(h.get("x-api-key") == ANT_KEY for h in seen)
    assert all(h.get("anthropic-version") == "2023-06-01" for h in seen)
    assert all("client-secret" not in json.dumps(h) for h in seen)
    assert seen[-1].get("anthropic-beta") == "interleaved-thinking-2025-05-14"
    tags = httpx.get(up.front.url + "/api/tags").json()["models"]
    entry = next(m for m in tags if m["name"] == f"{CLAUDE}:latest")
    assert entry["capabilities"] == ["completion", "tools", "vision", "thinking"]


def test_claude_behind_ollama_openai_and_responses_clients(up: Upstreams) -> None:
    oll = ollama.Client(host=up.front.url)
    reply = oll.chat(CLAUDE, messages=HI)
    assert reply.message.content == TEXT and (reply.prompt_eval_count, reply.eval_count) == (12, 6)
    streamed = list(oll.chat(CLAUDE, messages=HI, stream=True, think=True))
    assert "".join(c.message.content or "" for c in streamed) == TEXT
    assert "".join(c.message.thinking or "" for c in streamed) == "Let me think."
    sent = up.claude.requests[-1]["body"]
    assert (
        sent["thinking"]["type"] == "enabled"
        and sent["max_tokens"] > sent["thinking"]["budget_tokens"]
    )
    tools = [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": CITY},
        }
    ]
    called = oll.chat(CLAUDE, messages=HI, tools=tools)
    assert called.message.tool_calls and called.message.tool_calls[0].function.arguments == {
        "city": "Paris"
    }
    answered = oll.chat(
        CLAUDE,
        messages=[
            *HI,
            called.message.model_dump(exclude_none=True),
            {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        ],
        tools=tools,
    )
    assert answered.message.content == AFTER_TOOL
    sent_turns = up.claude.requests[-1]["body"]["messages"]
    use = sent_turns[-2]["content"][-1]
    assert use["type"] == "tool_use" and use["input"] == {"city": "Paris"}
    result = {"type": "tool_result", "tool_use_id": use["id"], "content": "sunny"}
    assert sent_turns[-1] == {"role": "user", "content": [result]}
    client = up.openai()
    chat = client.chat.completions.create(model=CLAUDE, messages=HI_CHAT)
    assert chat.choices[0].message.content == TEXT
    response = client.responses.create(model=CLAUDE, input="hi", reasoning={"effort": "high"})
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output_text == TEXT
    assert up.claude.requests[-1]["body"]["thinking"] == {"type": "enabled", "budget_tokens": 4095}


def test_an_overloaded_anthropic_upstream_is_each_familys_error(up: Upstreams) -> None:
    up.claude.overloaded = True
    try:
        with pytest.raises(anthropic.APIStatusError) as info:
            up.anthropic().messages.create(model=CLAUDE, max_tokens=8, messages=HI)
        assert info.value.status_code == 529
        body = info.value.body
        assert isinstance(body, dict) and body["error"]["type"] == "overloaded_error"
        with pytest.raises(openai.InternalServerError) as oinfo:
            up.openai().responses.create(model=CLAUDE, input="hi")
        assert oinfo.value.status_code == 503
        answer = httpx.post(up.front.url + "/api/chat", json={"model": CLAUDE, "messages": HI})
        assert answer.status_code == 503 and "Overloaded" in answer.json()["error"]
    finally:
        up.claude.overloaded = False
