"""llama.cpp's server engine behind the gateway, end to end with real clients.

The default model shows the runner's shape (one process per model, parallel slots that
overlap in time, a reload rather than a second copy); tiny models written for the test
(:mod:`tests.tiny_models`) show thinking and vision through the engine's real tokenizer,
sampler and projector: the successor model answers ``<think>I think</think>The answer`` to
any prompt ending in a newline, so what the gateway makes of it is exact.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import anthropic
import httpx
import ollama
import openai
import pytest
from anthropic.types import ContentBlockParam, ImageBlockParam, MessageParam, ThinkingConfigParam

from tests.conftest import (
    DEFAULT_MODEL,
    GREEDY,
    GardenServer,
    present,
    start_server,
    stop_and_check,
)
from tests.tiny_models import (
    THINK_ANSWER,
    png_bytes,
    successor_embd,
    write_projector,
    write_successor_model,
)

COUNTING = "Count from 1 to 1000: 1, 2, 3,"

# --- the runner's shape -------------------------------------------------------------------------


def test_parallel_streams_overlap_in_one_runner(make_garden: Callable[..., GardenServer]) -> None:
    server = make_garden(OLLAMA_NUM_PARALLEL="4")
    body = {
        "model": DEFAULT_MODEL,
        "prompt": COUNTING,
        "raw": True,
        "options": {**GREEDY, "num_predict": 48},
    }

    async def one(http: httpx.AsyncClient) -> tuple[float, float, str]:
        first = 0.0
        text = []
        async with http.stream("POST", "/api/generate", json=body) as response:
            async for line in response.aiter_lines():
                if line and not first:
                    first = time.monotonic()
                if line:
                    text.append(httpx.Response(200, content=line).json().get("response", ""))
        return first, time.monotonic(), "".join(text)

    async def four() -> list[tuple[float, float, str]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            await http.post("/api/generate", json={"model": DEFAULT_MODEL})  # load first
            return list(await asyncio.gather(*(one(http) for _ in range(4))))

    spans = asyncio.run(four())
    assert max(first for first, _, _ in spans) < min(last for _, last, _ in spans)
    assert len({text for _, _, text in spans}) == 1  # greedy: four equal answers
    (runner,) = server.runners()  # one process, one copy of the weights
    cmdline = runner.cmdline()
    assert cmdline[cmdline.index("--parallel") + 1] == "4"
    assert cmdline[cmdline.index("--ctx-size") + 1] == str(4 * 4096)


def test_other_num_ctx_reloads_the_one_runner_and_keep_alive_0_unloads_it(
    make_garden: Callable[..., GardenServer],
) -> None:
    server = make_garden()
    client = ollama.Client(host=server.url)
    client.generate(DEFAULT_MODEL, "1,", raw=True, options={**GREEDY, "num_predict": 1})
    (first,) = server.runners()
    reply = client.generate(
        DEFAULT_MODEL, "1,", raw=True, options={**GREEDY, "num_predict": 1, "num_ctx": 1024}
    )
    assert reply.done
    (second,) = server.runners()  # reloaded: never two copies
    assert second.pid != first.pid
    (loaded,) = client.ps().models
    assert loaded.model == DEFAULT_MODEL and loaded.context_length == 1024
    client.generate(DEFAULT_MODEL, "", keep_alive=0)
    assert client.ps().models == []
    deadline = time.monotonic() + 10
    while server.runners() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.runners() == []


def test_raw_answers_carry_no_context_and_templated_ones_continue_from_theirs(
    garden: GardenServer,
) -> None:
    client = ollama.Client(host=garden.url)
    raw = client.generate(DEFAULT_MODEL, "1, 2,", raw=True, options={**GREEDY, "num_predict": 2})
    assert raw.context is None
    first = client.generate(DEFAULT_MODEL, "Say hi.", options={**GREEDY, "num_predict": 4})
    assert first.context and all(isinstance(t, int) for t in first.context)
    assert len(first.context) == (first.prompt_eval_count or 0) + (first.eval_count or 0)
    follow = client.generate(
        DEFAULT_MODEL, "Again.", context=first.context, options={**GREEDY, "num_predict": 2}
    )
    assert (follow.prompt_eval_count or 0) > len(first.context)


def test_a_prompt_longer_than_the_context_is_cut_or_refused(garden: GardenServer) -> None:
    client = ollama.Client(host=garden.url)
    long = "word " * 1500  # about 1,500 tokens against a 512-token context
    options = {**GREEDY, "num_predict": 2, "num_ctx": 512}
    reply = client.generate(DEFAULT_MODEL, long, raw=True, options=options)
    assert reply.done and (reply.prompt_eval_count or 0) < 512
    body = {"model": DEFAULT_MODEL, "prompt": long, "raw": True, "stream": False}
    refused = httpx.post(
        garden.url + "/api/generate", json={**body, "options": options, "truncate": False}
    )
    assert refused.status_code == 400
    assert "exceeds the context length (512 tokens)" in refused.json()["error"]


# --- thinking and vision, with tiny models of known answers -------------------------------------

THINKING_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}"
    "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)
PLAIN_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)
PNG = base64.b64encode(png_bytes(28, 28)).decode()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GardenServer]:
    """A gateway holding ``thinker`` (a thinking template) and ``seer`` (a projector)."""
    root = tmp_path_factory.mktemp("tiny")
    model = write_successor_model(root / "tiny.gguf", THINK_ANSWER)
    projector = write_projector(root / "mmproj.gguf", successor_embd(THINK_ANSWER))
    server = start_server(root / "garden", GARDEN_DEFAULT_MODEL="")
    client = ollama.Client(host=server.url)
    weights, proj = client.create_blob(model), client.create_blob(projector)
    client.create("thinker", files={"tiny.gguf": weights}, template=THINKING_TEMPLATE)
    client.create(
        "seer", files={"tiny.gguf": weights, "mmproj.gguf": proj}, template=PLAIN_TEMPLATE
    )
    yield server
    stop_and_check(server)


def test_capabilities_come_from_the_template_and_the_projector(tiny: GardenServer) -> None:
    client = ollama.Client(host=tiny.url)
    assert "thinking" in (client.show("thinker").capabilities or [])
    assert "vision" not in (client.show("thinker").capabilities or [])
    assert "vision" in (client.show("seer").capabilities or [])
    assert "thinking" not in (client.show("seer").capabilities or [])


def test_reasoning_comes_back_apart_from_the_answer(tiny: GardenServer) -> None:
    client = ollama.Client(host=tiny.url)
    messages = [{"role": "user", "content": "hi"}]
    whole = client.chat("thinker", messages=messages, think=True, options=GREEDY)
    assert whole.message.thinking == "I think" and whole.message.content == "The answer"
    parts = list(client.chat("thinker", messages=messages, options=GREEDY, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == "I think"  # on by default
    assert "".join(present(p.message.content for p in parts)) == "The answer"
    gen = client.generate("thinker", "hi", options=GREEDY)
    assert gen.thinking == "I think" and gen.response == "The answer"
    off = client.chat("thinker", messages=messages, think=False, options=GREEDY)
    assert off.message.thinking is None  # not parsed when thinking is off, as in Ollama
    assert off.message.content == "<think>I think</think>The answer"


def test_reasoning_content_on_the_openai_api(tiny: GardenServer) -> None:
    client = openai.OpenAI(base_url=tiny.url + "/v1", api_key="unused")
    messages: Any = [{"role": "user", "content": "hi"}]
    reply = client.chat.completions.create(model="thinker", messages=messages, temperature=0)
    message = reply.choices[0].message
    assert message.content == "The answer"
    assert message.model_extra and message.model_extra["reasoning_content"] == "I think"
    stream = client.chat.completions.create(
        model="thinker", messages=messages, temperature=0, stream=True
    )
    deltas = [c.choices[0].delta for c in stream if c.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    assert reasoning == "I think" and "".join(d.content or "" for d in deltas) == "The answer"


def test_thinking_blocks_on_the_anthropic_api(tiny: GardenServer) -> None:
    client = anthropic.Anthropic(base_url=tiny.url, api_key="unused", max_retries=0)
    hi: list[MessageParam] = [{"role": "user", "content": "hi"}]
    thinking: ThinkingConfigParam = {"type": "enabled", "budget_tokens": 1024}
    greedy = {"temperature": 0}
    reply = client.messages.create(
        model="thinker", max_tokens=64, messages=hi, thinking=thinking, extra_body=greedy
    )
    assert [b.type for b in reply.content] == ["thinking", "text"]
    reasoning, answer = reply.content
    assert reasoning.type == "thinking" and reasoning.thinking == "I think"
    assert answer.type == "text" and answer.text == "The answer"
    with client.messages.stream(
        model="thinker", max_tokens=64, messages=hi, thinking=thinking, extra_body=greedy
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert "".join(d.thinking for d in deltas if d.type == "thinking_delta") == "I think"
    assert "".join(d.text for d in deltas if d.type == "text_delta") == "The answer"
    assert [b.model_dump() for b in final.content] == [b.model_dump() for b in reply.content]
    # The thinking block goes back with the conversation, as Claude Code sends it.
    # (the blocks as the dicts the SDK's own models dump to)
    turn: MessageParam = {
        "role": "assistant",
        "content": [cast(ContentBlockParam, b.model_dump()) for b in reply.content],
    }
    again = client.messages.create(
        model="thinker",
        max_tokens=64,
        messages=[*hi, turn, {"role": "user", "content": "and?"}],
        extra_body=greedy,
    )
    last = again.content[-1]
    assert last.type == "text" and last.text == "The answer"
    off = client.messages.create(
        model="thinker",
        max_tokens=64,
        messages=hi,
        thinking={"type": "disabled"},
        extra_body=greedy,
    )
    assert [b.type for b in off.content] == ["text"]  # not parsed when off, as in Ollama
    image: ImageBlockParam = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    seen = client.messages.create(
        model="seer",
        max_tokens=64,
        messages=[{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}],
        extra_body=greedy,
    )
    first = seen.content[0]
    assert first.type == "text" and first.text == "<think>I think</think>The answer"
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(
            model="thinker",
            max_tokens=8,
            messages=[{"role": "user", "content": [image]}],
        )
    body = info.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"


def test_reasoning_items_on_the_responses_api(tiny: GardenServer) -> None:
    client = openai.OpenAI(base_url=tiny.url + "/v1", api_key="unused", max_retries=0)
    reply = client.responses.create(
        model="thinker", input="hi", reasoning={"effort": "high"}, temperature=0
    )
    assert [item.type for item in reply.output] == ["reasoning", "message"]
    reasoning = reply.output[0].model_dump()  # older SDKs know no reasoning content
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "I think"}]
    assert reply.output_text == "The answer"
    events = list(
        client.responses.create(
            model="thinker", input="hi", reasoning={"effort": "high"}, temperature=0, stream=True
        )
    )
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    said = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert (thought, said) == ("I think", "The answer")
    final = events[-1].response  # type: ignore[union-attr]
    assert [item.type for item in final.output] == ["reasoning", "message"]
    # Reasoning items go back with the conversation, as Codex sends them.
    items: Any = [
        {"role": "user", "content": "hi"},
        *(item.model_dump(exclude_none=True) for item in reply.output),
        {"role": "user", "content": "and?"},
    ]
    again = client.responses.create(model="thinker", input=items, temperature=0)
    assert again.output_text == "The answer"


def test_think_on_a_model_without_it_is_ollamas_400(tiny: GardenServer) -> None:
    client = ollama.Client(host=tiny.url)
    with pytest.raises(ollama.ResponseError) as info:
        client.chat("seer", messages=[{"role": "user", "content": "hi"}], think=True)
    assert info.value.status_code == 400
    assert info.value.error == '"seer:latest" does not support thinking'


def test_images_go_through_the_projector(tiny: GardenServer) -> None:
    client = ollama.Client(host=tiny.url)
    messages = [{"role": "user", "content": "what is this?", "images": [PNG]}]
    reply = client.chat("seer", messages=messages, options=GREEDY)
    assert reply.message.content == "<think>I think</think>The answer"
    assert (reply.prompt_eval_count or 0) > 4  # the image's embeddings were read
    assert client.generate("seer", "what is this?", images=[PNG], options=GREEDY).response
    oai = openai.OpenAI(base_url=tiny.url + "/v1", api_key="unused")
    content: Any = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    answer = oai.chat.completions.create(
        model="seer", messages=[{"role": "user", "content": content}], temperature=0
    )
    assert answer.choices[0].message.content == "<think>I think</think>The answer"


def test_images_for_a_model_without_a_projector_are_ollamas_400(tiny: GardenServer) -> None:
    client = ollama.Client(host=tiny.url)
    with pytest.raises(ollama.ResponseError) as info:
        client.chat("thinker", messages=[{"role": "user", "content": "x", "images": [PNG]}])
    assert info.value.status_code == 400
    assert info.value.error == '"thinker:latest" does not support images'


def test_a_projector_without_weights_is_refused(tiny: GardenServer, tmp_path: Path) -> None:
    client = ollama.Client(host=tiny.url)
    projector = write_projector(tmp_path / "p.gguf", 64)
    with pytest.raises(ollama.ResponseError) as info:
        client.create("nothing", files={"p.gguf": client.create_blob(projector)})
    assert info.value.status_code == 400 and "one GGUF model file" in info.value.error
