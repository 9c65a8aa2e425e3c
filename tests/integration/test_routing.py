"""Many backends behind one gateway: a second garden as an Ollama upstream, the OpenRouter
stand-in as an OpenAI upstream, llama-cpp-python's server as another; faults are real."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from modelgarden.store.default import find_default_gguf
from tests.conftest import DEFAULT_MODEL, GREEDY, GardenServer, free_port, present, wait_until
from tests.openrouter_stub import OpenRouterStub

KEY = "sk-or-test-key"


def raw_get_status(server: GardenServer, path: str) -> int:
    """GET with the path sent exactly as written (HTTP clients normalise dot segments)."""
    host, port = server.host.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {server.host}\r\nConnection: close\r\n\r\n".encode()
        )
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / f"garden-{time.monotonic_ns()}.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def openrouter() -> Iterator[OpenRouterStub]:
    stub = OpenRouterStub(KEY).start()
    yield stub
    stub.stop()


@pytest.fixture
def front(
    garden: GardenServer,
    openrouter: OpenRouterStub,
    make_garden: Callable[..., GardenServer],
    tmp_path: Path,
) -> GardenServer:
    """A gateway with no local model, in front of the shared garden and the stand-in."""
    toml = f"""
default_model = ""
[[backends]]
name = "upstream"
kind = "ollama"
urls = ["{garden.url}"]
aliases = {{ "tiny" = "{DEFAULT_MODEL}" }}

[[backends]]
name = "openrouter"
kind = "openai"
urls = ["{openrouter.url}"]
api_key_env = "TEST_OPENROUTER_KEY"
deny = ["*:free"]
"""
    return make_garden(GARDEN_CONFIG=config(tmp_path, toml), TEST_OPENROUTER_KEY=KEY)


def test_catalogue_is_the_union_each_model_once(front: GardenServer) -> None:
    names = present(m.model for m in ollama.Client(host=front.url).list().models)
    assert DEFAULT_MODEL in names and "tiny:latest" in names
    assert "meta-llama/llama-3.1-8b-instruct:latest" in names
    assert not any(n.startswith("mistralai/") for n in names)  # denied by glob
    assert len(names) == len(set(names))
    ids = [m.id for m in openai.OpenAI(base_url=front.url + "/v1", api_key="x").models.list()]
    assert sorted(ids) == sorted(names)


def test_ollama_client_on_ollama_upstream_and_alias(front: GardenServer) -> None:
    client = ollama.Client(host=front.url)
    reply = client.generate("tiny", "1, 2, 3,", raw=True, options={**GREEDY, "num_predict": 3})
    assert reply.done and reply.response is not None and " 4" in reply.response
    assert client.show(DEFAULT_MODEL).capabilities
    assert DEFAULT_MODEL in {m.model for m in client.ps().models}


def test_openai_client_on_ollama_upstream(front: GardenServer) -> None:
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="x", max_retries=0)
    reply = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, **GREEDY
    )
    assert reply.choices[0].message.content and reply.usage is not None


def test_ollama_client_on_openrouter(front: GardenServer, openrouter: OpenRouterStub) -> None:
    client = ollama.Client(host=front.url, headers={"Authorization": "Bearer client-secret"})
    model = "meta-llama/llama-3.1-8b-instruct"
    reply = client.chat(model, messages=[{"role": "user", "content": "hi"}])
    assert reply.message.content == "Hello from the stand-in."
    assert reply.prompt_eval_count == 12 and reply.eval_count == 6
    chunks = list(client.chat(model, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "".join(c.message.content or "" for c in chunks).strip() == "Hello from the stand-in."
    assert chunks[-1].done and chunks[-1].eval_count == 6
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    called = client.chat(model, messages=[{"role": "user", "content": "weather?"}], tools=tools)
    assert called.message.tool_calls and called.message.tool_calls[0].function.arguments == {
        "city": "Paris"
    }
    streamed = list(
        client.chat(
            model, messages=[{"role": "user", "content": "weather?"}], tools=tools, stream=True
        )
    )
    calls = [c for chunk in streamed for c in chunk.message.tool_calls or []]
    assert calls and calls[0].function.arguments == {"city": "Paris"}
    # the upstream got the gateway's key, never the client's credentials
    sent = [r["headers"].get("Authorization") for r in openrouter.requests if "body" in r]
    assert sent and all(h == f"Bearer {KEY}" for h in sent)


def test_openai_client_on_openrouter_is_relayed(front: GardenServer) -> None:
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="client-key", max_retries=0)
    reply = client.chat.completions.create(
        model="meta-llama/llama-3.1-8b-instruct", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.id.startswith("gen-")  # OpenRouter's own answer, bytes relayed
    assert reply.choices[0].message.content == "Hello from the stand-in."


def test_upstream_key_never_reaches_the_client(front: GardenServer, tmp_path: Path) -> None:
    responses = [
        httpx.post(
            front.url + "/api/chat",
            json={
                "model": "meta-llama/llama-3.1-8b-instruct",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": False,
            },
        ),
        httpx.post(front.url + "/v1/chat/completions", json={"model": "nope", "messages": []}),
        httpx.get(front.url + "/api/tags"),
    ]
    for response in responses:
        assert KEY not in response.text
    assert KEY not in front.logs()


def test_passthrough_and_its_guards(front: GardenServer) -> None:
    assert httpx.get(front.url + "/ollama/api/version").json()["version"]
    tags = httpx.get(front.url + "/ollama/upstream/api/tags").json()
    assert DEFAULT_MODEL in [m["name"] for m in tags["models"]]
    body = {
        "model": DEFAULT_MODEL,
        "prompt": "1, 2,",
        "raw": True,
        "options": {**GREEDY, "num_predict": 2},
    }
    with httpx.stream("POST", front.url + "/ollama/api/generate", json=body, timeout=60) as r:
        lines = [json.loads(x) for x in r.iter_lines() if x]
    assert r.headers["content-type"] == "application/x-ndjson" and lines[-1]["done"]
    missing = httpx.post(front.url + "/ollama/api/show", json={"model": "nope"})
    assert missing.status_code == 404 and "error" in missing.json()
    state = httpx.get(front.url + "/garden/backends").json()["backends"]
    upstream = next(b for b in state if b["name"] == "upstream")
    assert upstream["active"] == 0 and upstream["replicas"][0]["outstanding"] == 0
    for path in (
        "/ollama/api/../api/delete",
        "/ollama/%2e%2e/api/tags",
        "/ollama/%252e%252e/x",
        "/ollama/api/..%2fdelete",
        "/ollama//api/tags",
    ):
        assert raw_get_status(front, path) == 400, path


def test_dead_upstream_opens_the_breaker_then_falls_back(
    make_garden: Callable[..., GardenServer], tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    toml = f"""
[[backends]]
name = "gone"
kind = "ollama"
urls = ["{dead}"]
models = ["remote-only:latest"]
retries = 0
breaker_failures = 2
breaker_cooldown = 60

[fallbacks]
"remote-only" = ["{DEFAULT_MODEL}"]
"""
    server = make_garden(GARDEN_CONFIG=config(tmp_path, toml))
    # the remote model falls back to the local one while its backend is down
    reply = ollama.Client(host=server.url).generate(
        "remote-only", "1, 2,", raw=True, options={**GREEDY, "num_predict": 2}
    )
    assert reply.done and reply.response
    # without a fallback the client sees a clean 502, then fast failures once the breaker opens
    toml_nofb = toml.split("[fallbacks]")[0]
    bare = make_garden(GARDEN_CONFIG=config(tmp_path, toml_nofb))
    statuses = []
    for _ in range(3):
        r = httpx.post(bare.url + "/api/generate", json={"model": "remote-only", "prompt": "x"})
        statuses.append((r.status_code, r.json()["error"]))
    assert all(code == 502 for code, _ in statuses)
    assert "circuit open" in statuses[-1][1]
    state = httpx.get(bare.url + "/garden/backends").json()["backends"]
    gone = next(b for b in state if b["name"] == "gone")
    assert gone["replicas"][0]["breaker"] == "open"
    assert [b["name"] for b in state] == ["local", "gone"]


def test_upstream_dying_mid_stream_ends_with_an_error_record(
    front: GardenServer, openrouter: OpenRouterStub
) -> None:
    openrouter.fail_mid_stream = True
    body = {
        "model": "meta-llama/llama-3.1-8b-instruct",
        "messages": [{"role": "user", "content": "hi"}],
    }
    with httpx.stream("POST", front.url + "/api/chat", json=body, timeout=30) as r:
        lines = [json.loads(x) for x in r.iter_lines() if x]
    assert r.status_code == 200
    assert "error" in lines[-1] and not any(line.get("done") for line in lines)
    with httpx.stream(
        "POST", front.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=30
    ) as r:
        events = [x for x in r.iter_lines() if x.startswith("data: ")]
    assert "error" in json.loads(events[-2][6:]) and events[-1] == "data: [DONE]"


def test_llama_cpp_server_as_openai_upstream(
    make_garden: Callable[..., GardenServer], tmp_path: Path
) -> None:
    """llama.cpp's own server (the engine our runners run, started by hand) behind /v1."""
    port = free_port()
    gguf = find_default_gguf()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelgarden.runner",
            "--model",
            str(gguf),
            "--alias",
            "smol-upstream",
            "--ctx-size",
            "1024",
            "--port",
            str(port),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        toml = f"""
default_model = ""
[[backends]]
name = "llamacpp"
kind = "openai"
urls = ["http://127.0.0.1:{port}/v1"]
"""
        server = make_garden(GARDEN_CONFIG=config(tmp_path, toml))
        client = ollama.Client(host=server.url)
        assert "smol-upstream:latest" in [m.model for m in client.list().models]
        reply = client.chat(
            "smol-upstream",
            messages=[{"role": "user", "content": "hi"}],
            options={**GREEDY, "num_predict": 5},
        )
        assert reply.message.content and reply.eval_count == 5
        chunks = list(
            client.generate(
                "smol-upstream", "1, 2, 3,", options={**GREEDY, "num_predict": 4}, stream=True
            )
        )
        assert chunks[-1].done and "".join(present(c.response for c in chunks))
        # the upstream dies: a clean error, and the gateway stays up
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with pytest.raises(ollama.ResponseError) as info:
            client.chat("smol-upstream", messages=[{"role": "user", "content": "hi"}])
        assert info.value.status_code == 502
        assert httpx.get(server.url + "/").status_code == 200
    finally:
        proc.kill()
        proc.wait()


def down_backend(
    make_garden: Callable[..., GardenServer], tmp_path: Path, port: int, settings: str
) -> GardenServer:
    """A gateway whose only backend is an OpenRouter-style upstream on a port nobody serves
    (yet): the stand-in may be started there later."""
    toml = f"""
default_model = ""
[[backends]]
name = "flaky"
kind = "openai"
urls = ["http://127.0.0.1:{port}/api/v1"]
api_key_env = "TEST_OPENROUTER_KEY"
models = ["meta-llama/llama-3.1-8b-instruct"]
{settings}
"""
    return make_garden(GARDEN_CONFIG=config(tmp_path, toml), TEST_OPENROUTER_KEY=KEY)


def test_breaker_opens_while_down_and_recovers(
    make_garden: Callable[..., GardenServer], tmp_path: Path
) -> None:
    port = free_port()
    server = down_backend(
        make_garden, tmp_path, port, "retries = 0\nbreaker_failures = 1\nbreaker_cooldown = 1"
    )
    body = {
        "model": "meta-llama/llama-3.1-8b-instruct",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
    }
    first = httpx.post(server.url + "/api/chat", json=body)
    assert first.status_code == 502 and "cannot be reached" in first.json()["error"]
    fast = httpx.post(server.url + "/api/chat", json=body)
    assert fast.status_code == 502 and "circuit open" in fast.json()["error"]
    stub = OpenRouterStub(KEY, port=port).start()
    try:
        time.sleep(1.2)  # the cooldown passes; the next call is the probe
        recovered = httpx.post(server.url + "/api/chat", json=body)
        assert recovered.status_code == 200, recovered.text
        assert recovered.json()["message"]["content"] == "Hello from the stand-in."
        state = httpx.get(server.url + "/garden/backends").json()["backends"][-1]
        assert state["replicas"][0]["breaker"] == "closed"
    finally:
        stub.stop()


def test_health_checks_open_and_close_the_breaker_without_client_traffic(
    make_garden: Callable[..., GardenServer], tmp_path: Path
) -> None:
    port = free_port()
    probed = 'breaker_failures = 2\nbreaker_cooldown = 60\nhealth_interval = "200ms"'
    server = down_backend(make_garden, tmp_path, port, probed)

    def replica() -> dict[str, Any]:
        state = httpx.get(server.url + "/garden/backends").json()["backends"][-1]
        return dict(state["replicas"][0])

    assert wait_until(lambda: replica()["breaker"] == "open", timeout=10)
    assert replica()["healthy"] is False
    hello = [{"role": "user", "content": "hi"}]
    body = {"model": "meta-llama/llama-3.1-8b-instruct", "messages": hello, "stream": False}
    refused = httpx.post(server.url + "/api/chat", json=body)
    assert refused.status_code == 502 and "circuit open" in refused.json()["error"]

    stub = OpenRouterStub(KEY, port=port).start()
    try:  # the cooldown is a minute: only the probe can close the breaker this soon
        assert wait_until(lambda: replica()["breaker"] == "closed", timeout=10)
        assert replica()["healthy"] is True
        answer = httpx.post(server.url + "/api/chat", json=body)
        assert answer.status_code == 200, answer.text
    finally:
        stub.stop()
    assert "backend replica unhealthy" in server.logs()
    assert "backend replica recovered" in server.logs()
