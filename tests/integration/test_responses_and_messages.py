"""OpenAI's Responses API and Anthropic's Messages API with their official Python SDKs, on
the real default model (smollm2:135m, greedy, a few tokens), and Ollama's newer fields.

A 135M model writes weak answers; what is checked is the protocol: the shapes, the event
sequences, the errors, and that streamed and whole answers say the same.
"""

from __future__ import annotations

import base64
import json
import time
from typing import cast

import anthropic
import httpx
import openai
import pytest
from anthropic.types import ContentBlockParam, ImageBlockParam, MessageParam, ToolParam
from openai.types.responses import (
    EasyInputMessageParam,
    FunctionToolParam,
    ResponseCompletedEvent,
    ResponseFunctionToolCallParam,
    ResponseIncompleteEvent,
    ResponseInputImageParam,
    ResponseInputItemParam,
    ResponseInputMessageContentListParam,
    ResponseInputParam,
)

from tests.conftest import DEFAULT_MODEL, GardenServer, scrape, value
from tests.tiny_models import png_bytes

CITY: dict[str, object] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
#: A function tool as clients send it, without "strict": the SDK's FunctionToolParam requires
#: that key, the API does not (and nothing here reads it).
WEATHER: FunctionToolParam = {  # type: ignore[typeddict-item]
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "parameters": CITY,
}
CLAUDE_WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "input_schema": CITY,
}
COLOURS = "Name three colours."
HI: list[MessageParam] = [{"role": "user", "content": "Say hello."}]
PNG = base64.b64encode(png_bytes(2, 2)).decode()
#: Greedy sampling for Anthropic clients: the newest SDK no longer has a temperature field,
#: so it goes in the body as older SDKs (and Claude Code) send it.
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def oai(garden: GardenServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=garden.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def claude(garden: GardenServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=garden.url, api_key="unused", max_retries=0)


# --- the Responses API --------------------------------------------------------------------------


def test_response_streamed_equals_whole(oai: openai.OpenAI) -> None:
    whole = oai.responses.create(
        model=DEFAULT_MODEL, input=COLOURS, max_output_tokens=16, temperature=0
    )
    assert whole.object == "response" and whole.status in ("completed", "incomplete")
    assert whole.output_text and whole.output[0].type == "message"
    assert whole.usage is not None and 0 < whole.usage.output_tokens <= 16
    assert whole.usage.total_tokens == whole.usage.input_tokens + whole.usage.output_tokens
    events = list(
        oai.responses.create(
            model=DEFAULT_MODEL, input=COLOURS, max_output_tokens=16, temperature=0, stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] == f"response.{whole.status}"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    last = events[-1]
    assert isinstance(last, (ResponseCompletedEvent, ResponseIncompleteEvent))
    final = last.response
    assert deltas == final.output_text == whole.output_text


def test_a_function_tool_round_trip(oai: openai.OpenAI) -> None:
    question: ResponseInputParam = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = oai.responses.create(
        model=DEFAULT_MODEL,
        input=question,
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=40,
        temperature=0,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and calls[0].call_id
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    result: ResponseInputItemParam = {
        "type": "function_call_output",
        "call_id": calls[0].call_id,
        "output": "18C, sunny",
    }
    # the call as the dict the SDK's own model dumps to
    call = cast(ResponseFunctionToolCallParam, calls[0].model_dump(exclude_none=True))
    second = oai.responses.create(
        model=DEFAULT_MODEL,
        input=[*question, call, result],
        tools=[WEATHER],
        max_output_tokens=16,
        temperature=0,
    )
    assert second.output_text
    events = list(
        oai.responses.create(
            model=DEFAULT_MODEL,
            input=question,
            tools=[WEATHER],
            tool_choice="required",
            max_output_tokens=40,
            temperature=0,
            stream=True,
        )
    )
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done and json.loads(done[0].arguments) == json.loads(
        "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    )


def test_a_json_schema_answer_parses(oai: openai.OpenAI) -> None:
    schema: dict[str, object] = {
        "type": "object",
        "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
        "required": ["colour"],
    }
    reply = oai.responses.create(
        model=DEFAULT_MODEL,
        input="Pick a colour.",
        text={"format": {"type": "json_schema", "name": "pick", "schema": schema, "strict": True}},
        max_output_tokens=24,
        temperature=0,
    )
    assert json.loads(reply.output_text)["colour"] in ("red", "green", "blue")
    assert reply.status == "completed"
    assert reply.text is not None and reply.text.format is not None
    assert reply.text.format.type == "json_schema"
    # The SDK's stream helper folds the events into the same completed response.
    with oai.responses.stream(
        model=DEFAULT_MODEL,
        input="Pick a colour.",
        text={"format": {"type": "json_schema", "name": "pick", "schema": schema, "strict": True}},
        max_output_tokens=24,
        temperature=0,
    ) as stream:
        assert stream.get_final_response().output_text == reply.output_text


def test_responses_are_stateless(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model=DEFAULT_MODEL, input="x", previous_response_id="resp_123")
    assert info.value.status_code == 400
    assert "stateless" in info.value.message and info.value.param == "previous_response_id"
    reply = oai.responses.create(model=DEFAULT_MODEL, input="x", max_output_tokens=2)
    # "store" is no field of the SDK's Response: pydantic keeps it among the extra fields
    assert reply.model_dump()["store"] is False and reply.previous_response_id is None


def test_reasoning_on_a_model_that_cannot_think_is_answered_without(oai: openai.OpenAI) -> None:
    reply = oai.responses.create(
        model=DEFAULT_MODEL,
        input="hi",
        reasoning={"effort": "high"},
        max_output_tokens=4,
        temperature=0,
    )
    assert [item.type for item in reply.output] == ["message"]
    assert reply.reasoning is not None and reply.reasoning.effort == "high"


def test_an_image_for_a_model_without_vision_is_refused(oai: openai.OpenAI) -> None:
    image: ResponseInputImageParam = {
        "type": "input_image",
        "image_url": f"data:image/png;base64,{PNG}",
        "detail": "auto",
    }
    content: ResponseInputMessageContentListParam = [
        {"type": "input_text", "text": "what is this?"},
        image,
    ]
    message: EasyInputMessageParam = {"role": "user", "content": content}
    with pytest.raises(openai.BadRequestError, match="does not support images"):
        oai.responses.create(model=DEFAULT_MODEL, input=[message])


# --- the Anthropic Messages API -----------------------------------------------------------------


def test_message_streamed_equals_whole(claude: anthropic.Anthropic) -> None:
    whole = claude.messages.create(
        model=DEFAULT_MODEL,
        max_tokens=16,
        messages=HI,
        extra_body=GREEDY,
    )
    assert whole.type == "message" and whole.role == "assistant" and whole.id.startswith("msg_")
    assert whole.content[0].type == "text" and whole.content[0].text
    assert whole.stop_reason in ("end_turn", "max_tokens")
    assert 0 < whole.usage.output_tokens <= 16 and whole.usage.input_tokens > 0
    with claude.messages.stream(
        model=DEFAULT_MODEL,
        max_tokens=16,
        messages=HI,
        extra_body=GREEDY,
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.content[0].type == "text" and whole.content[0].type == "text"
    assert text == final.content[0].text == whole.content[0].text
    assert (
        final.stop_reason == whole.stop_reason
        and final.usage.output_tokens == whole.usage.output_tokens
    )
    assert final.usage.input_tokens == whole.usage.input_tokens
    count = claude.messages.count_tokens(model=DEFAULT_MODEL, messages=HI)
    assert count.input_tokens == whole.usage.input_tokens


def test_a_tool_use_round_trip(claude: anthropic.Anthropic) -> None:
    question: list[MessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = claude.messages.create(
        model=DEFAULT_MODEL,
        max_tokens=40,
        messages=question,
        tools=[CLAUDE_WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        extra_body=GREEDY,
    )
    uses = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use" and uses and uses[0].name == "get_weather"
    assert isinstance(uses[0].input, dict) and isinstance(uses[0].input["city"], str)
    followed: list[MessageParam] = [
        *question,
        # the answer's blocks as the dicts the SDK's own models dump to
        {
            "role": "assistant",
            "content": [cast(ContentBlockParam, b.model_dump()) for b in first.content],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18C"}],
        },
    ]
    second = claude.messages.create(
        model=DEFAULT_MODEL,
        max_tokens=16,
        messages=followed,
        tools=[CLAUDE_WEATHER],
        extra_body=GREEDY,
    )
    assert second.content and second.content[-1].type == "text"
    with claude.messages.stream(
        model=DEFAULT_MODEL,
        max_tokens=40,
        messages=question,
        tools=[CLAUDE_WEATHER],
        tool_choice={"type": "any"},
        extra_body=GREEDY,
    ) as stream:
        streamed = stream.get_final_message()
    tool = [b for b in streamed.content if b.type == "tool_use"]
    assert streamed.stop_reason == "tool_use" and isinstance(tool[0].input["city"], str)


def test_an_image_for_a_model_without_vision_is_anthropics_400(claude: anthropic.Anthropic) -> None:
    image: ImageBlockParam = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(
            model=DEFAULT_MODEL,
            max_tokens=8,
            messages=[{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}],
        )
    assert info.value.status_code == 400
    body = info.value.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "invalid_request_error"
    assert "does not support images" in body["error"]["message"]


def test_thinking_on_a_model_without_it_is_answered_without(claude: anthropic.Anthropic) -> None:
    reply = claude.messages.create(
        model=DEFAULT_MODEL,
        max_tokens=8,
        messages=HI,
        thinking={"type": "enabled", "budget_tokens": 1024},
        stop_sequences=["."],
        extra_body=GREEDY,
    )
    assert [b.type for b in reply.content] == ["text"]


def test_anthropic_errors_and_headers(claude: anthropic.Anthropic, garden: GardenServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such:model", max_tokens=4, messages=HI)
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model 'no-such:model' not found"},
    }
    answer = httpx.post(
        garden.url + "/v1/messages",
        json={"model": DEFAULT_MODEL, "messages": HI},
        headers={"anthropic-version": "2023-06-01", "x-api-key": "anything"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in answer.json()["error"]["message"]
    bad = httpx.post(garden.url + "/v1/messages", content=b"{nope")
    assert bad.status_code == 400 and bad.json()["type"] == "error"


# --- what the gateway around them does ----------------------------------------------------------


def test_unknown_routes_do_not_speak_of_models(garden: GardenServer) -> None:
    answer = httpx.post(garden.url + "/v1/nothing", json={})
    assert answer.status_code == 404 and answer.json()["error"]["code"] is None
    assert "model" not in answer.text
    missing = httpx.post(
        garden.url + "/v1/chat/completions", json={"model": "nope", "messages": HI}
    )
    assert missing.json()["error"]["code"] == "model_not_found"


def test_ollamas_newer_fields(garden: GardenServer) -> None:
    assert httpx.get(garden.url + "/api/version").json() == {"version": "0.14.3"}
    assert httpx.get(garden.url + "/api/status").json() == {
        "cloud": {"disabled": True, "source": "config"}
    }
    tags = httpx.get(garden.url + "/api/tags").json()["models"]
    entry = next(m for m in tags if m["name"] == DEFAULT_MODEL)
    assert entry["capabilities"] == ["completion", "tools"]
    body = {
        "model": DEFAULT_MODEL,
        "stream": False,
        "options": {"num_predict": 4, "temperature": 0},
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "call_1", "function": {"name": "w", "arguments": {}}}],
            },
            {"role": "tool", "content": "18C", "tool_name": "w", "tool_call_id": "call_1"},
        ],
    }
    assert httpx.post(garden.url + "/api/chat", json=body, timeout=60).status_code == 200
    think = {**body, "think": "max"}
    refused = httpx.post(garden.url + "/api/chat", json=think, timeout=60)
    assert refused.status_code == 400 and "does not support thinking" in refused.json()["error"]


def test_the_openapi_document_has_the_new_routes(garden: GardenServer) -> None:
    doc = httpx.get(garden.url + "/openapi.json").json()
    for path, schema in (
        ("/v1/responses", "ResponsesRequest"),
        ("/v1/messages", "MessagesRequest"),
        ("/v1/messages/count_tokens", "CountTokensRequest"),
    ):
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["$ref"].endswith(schema) and schema in doc["components"]["schemas"]
    assert "/api/status" in doc["paths"]


def test_metrics_usage_and_logs_name_each_family(
    garden: GardenServer, claude: anthropic.Anthropic, oai: openai.OpenAI
) -> None:
    claude.messages.create(model=DEFAULT_MODEL, max_tokens=2, messages=HI)
    oai.responses.create(model=DEFAULT_MODEL, input="hi", max_output_tokens=2)
    m = scrape(garden)
    for api, endpoint in (("anthropic", "/v1/messages"), ("responses", "/v1/responses")):
        assert value(m, "garden_requests_total", api=api, endpoint=endpoint, status="200") >= 1
        assert value(m, "garden_tokens_total", kind="completion", model=DEFAULT_MODEL) > 0
    deadline = time.monotonic() + 20
    while True:
        rows = httpx.get(garden.url + "/garden/usage", params={"by": "api"}).json()["rows"]
        apis = {row["api"]: row for row in rows}
        if {"anthropic", "responses"} <= set(apis) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert apis["anthropic"]["completion_tokens"] > 0 and apis["responses"]["prompt_tokens"] > 0
    lines = [line for line in garden.logs().splitlines() if line.startswith("{")]
    logged = {(r.get("api"), r.get("endpoint")) for r in map(json.loads, lines)}
    assert {("anthropic", "/v1/messages"), ("responses", "/v1/responses")} <= logged
