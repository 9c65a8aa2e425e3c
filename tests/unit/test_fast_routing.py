"""Routing and fallbacks through the whole app, in-process: which backend answers a model,
what each API family says when none does, and when the next route is tried.

The app runs through its own lifespan over fake backends (``tests/fakes.py``); a remote
Ollama backend's catalogue (aliases, allow and deny globs) is read from its configuration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from modelgarden.backends.base import Api, BackendRequest, BackendResponse
from modelgarden.backends.remote import OllamaBackend
from modelgarden.errors import BackendUnavailable, BadRequest, Overloaded
from tests.fakes import FakeBackend, fast_app, fast_settings, replica_pair, upstream

HI = [{"role": "user", "content": "hi"}]


async def ollama_chat(
    client: httpx.AsyncClient, model: str, stream: bool = False
) -> httpx.Response:
    return await client.post("/api/chat", json={"model": model, "messages": HI, "stream": stream})


def said(response: httpx.Response) -> str:
    """The answer's text, in whichever family the response is."""
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    if "choices" in data:
        return str(data["choices"][0]["message"]["content"])
    if data.get("type") == "message":
        return str(data["content"][0]["text"])
    return str(data["message"]["content"])


def streamed(response: httpx.Response) -> list[dict[str, Any]]:
    """The records of an Ollama stream."""
    assert response.status_code == 200, response.text
    return [orjson.loads(line) for line in response.content.splitlines() if line]


# --- which backend answers ---------------------------------------------------------------


async def test_the_first_backend_that_serves_a_model_answers_it_in_every_family(
    tmp_path: Path,
) -> None:
    first = FakeBackend("first", ["m", "x"])
    second = FakeBackend("second", ["m", "y:7b"])
    async with fast_app(fast_settings(tmp_path), [first, second]) as garden:
        client = garden.client
        assert said(await ollama_chat(client, "m")) == "from first"
        assert said(await ollama_chat(client, "y:7b")) == "from second"
        openai = {"model": "m", "messages": HI}
        assert said(await client.post("/v1/chat/completions", json=openai)) == "from first"
        anthropic = {"model": "y:7b", "messages": HI, "max_tokens": 5}
        assert said(await client.post("/v1/messages", json=anthropic)) == "from second"
        tags = (await client.get("/api/tags")).json()
        assert [m["name"] for m in tags["models"]] == ["m:latest", "x:latest", "y:7b"]
        models = (await client.get("/v1/models")).json()
        assert [m["id"] for m in models["data"]] == ["m:latest", "x:latest", "y:7b"]
    assert [r.model for r in first.sent] == ["m:latest", "m:latest"]
    assert [r.model for r in second.sent] == ["y:7b", "y:7b"]
    # Ollama's own client is relayed as is; the others were translated into Ollama's.
    assert [r.api for r in first.sent] == ["ollama", "ollama"]
    assert first.sent[1].endpoint == "chat" and first.sent[1].body["model"] == "m:latest"


NOT_FOUND = "model 'nope' not found"


async def test_an_unknown_model_is_a_404_in_each_familys_own_shape(tmp_path: Path) -> None:
    backend = FakeBackend("only", ["m"])
    async with fast_app(fast_settings(tmp_path), [backend]) as garden:
        client = garden.client
        ollama = await ollama_chat(client, "nope")
        openai = await client.post("/v1/chat/completions", json={"model": "nope", "messages": HI})
        anthropic = await client.post(
            "/v1/messages", json={"model": "nope", "messages": HI, "max_tokens": 5}
        )
        show = await client.post("/api/show", json={"model": "nope"})
    assert (ollama.status_code, ollama.json()) == (404, {"error": NOT_FOUND})
    assert (show.status_code, show.json()) == (404, {"error": NOT_FOUND})
    assert openai.status_code == 404
    assert openai.json() == {
        "error": {
            "message": NOT_FOUND, "type": "not_found_error", "param": None,
            "code": "model_not_found",
        }
    }  # fmt: skip
    assert anthropic.status_code == 404
    assert anthropic.json() == {
        "type": "error", "error": {"type": "not_found_error", "message": NOT_FOUND}
    }  # fmt: skip
    assert backend.sent == []


REMOTE = """
[[backends]]
name = "workstation"
kind = "ollama"
urls = ["{url}"]
models = ["llama3:8b", "llama3:70b", "qwen:7b"]
allow = ["llama3*"]
deny = ["*:70b"]
aliases = {{ "chat" = "llama3:8b" }}
health_interval = 0
retries = 0
"""


async def test_a_remote_backend_serves_its_allowed_models_and_aliases_by_upstream_id(
    tmp_path: Path,
) -> None:
    async with upstream("daemon") as daemon:
        settings = fast_settings(tmp_path, REMOTE.format(url=daemon.url))
        remote = OllamaBackend(settings.backends[0])
        async with fast_app(settings, [remote]) as garden:
            client = garden.client
            tags = (await client.get("/api/tags")).json()
            assert sorted(m["name"] for m in tags["models"]) == ["chat:latest", "llama3:8b"]
            assert said(await ollama_chat(client, "chat")) == "from daemon"
            assert said(await ollama_chat(client, "llama3:8b")) == "from daemon"
            for hidden in ("qwen:7b", "llama3:70b"):  # not allowed; denied
                response = await ollama_chat(client, hidden)
                assert response.status_code == 404, hidden
    assert [body["model"] for body in daemon.received] == ["llama3:8b", "llama3:8b"]


# --- fallbacks ---------------------------------------------------------------------------

FALLBACKS = """
[fallbacks]
"m" = ["backup", "spare"]
"""


@pytest.mark.parametrize(
    "failure", [BackendUnavailable("primary is down"), Overloaded("primary is full")]
)
async def test_a_failing_backend_falls_back_to_the_models_fallbacks_in_order(
    tmp_path: Path, failure: BackendUnavailable | Overloaded
) -> None:
    primary = FakeBackend("primary", ["m"], fail=failure)
    backup = FakeBackend("backup", ["backup"])
    spare = FakeBackend("spare", ["spare"])
    settings = fast_settings(tmp_path, FALLBACKS)
    async with fast_app(settings, [primary, backup, spare]) as garden:
        assert said(await ollama_chat(garden.client, "m")) == "from backup"
        backup.fail = BackendUnavailable("backup is down")
        openai = {"model": "m", "messages": HI}
        response = await garden.client.post("/v1/chat/completions", json=openai)
        assert said(response) == "from spare"
    assert len(primary.sent) == 2 and len(backup.sent) == 2 and len(spare.sent) == 1
    assert spare.sent[0].model == "spare:latest"


async def test_when_every_route_fails_the_client_gets_the_last_failure(tmp_path: Path) -> None:
    primary = FakeBackend("primary", ["m"], fail=BackendUnavailable("primary is down"))
    backup = FakeBackend("backup", ["backup"], fail=BackendUnavailable("backup is down"))
    spare = FakeBackend("spare", ["spare"], fail=Overloaded("spare is full", retry_after=2))
    async with fast_app(fast_settings(tmp_path, FALLBACKS), [primary, backup, spare]) as garden:
        client = garden.client
        ollama = await ollama_chat(client, "m")
        anthropic = await client.post(
            "/v1/messages", json={"model": "m", "messages": HI, "max_tokens": 5}
        )
        spare.fail = BackendUnavailable("spare is down")
        openai = await client.post("/v1/chat/completions", json={"model": "m", "messages": HI})
    assert (ollama.status_code, ollama.json()) == (503, {"error": "spare is full"})
    assert ollama.headers["retry-after"] == "2"
    assert anthropic.status_code == 529  # Anthropic's overloaded_error
    assert anthropic.json()["error"] == {"type": "overloaded_error", "message": "spare is full"}
    assert openai.status_code == 502
    assert openai.json()["error"]["message"] == "spare is down"
    assert (len(primary.sent), len(backup.sent), len(spare.sent)) == (3, 3, 3)


async def test_a_request_the_backend_refuses_is_not_sent_to_a_fallback(tmp_path: Path) -> None:
    primary = FakeBackend("primary", ["m"], fail=BadRequest("no such option"))
    backup = FakeBackend("backup", ["backup"])
    async with fast_app(fast_settings(tmp_path, FALLBACKS), [primary, backup]) as garden:
        response = await ollama_chat(garden.client, "m")
    assert (response.status_code, response.json()) == (400, {"error": "no such option"})
    assert backup.sent == []


async def test_a_failure_after_the_first_byte_ends_the_stream_and_is_not_retried(
    tmp_path: Path,
) -> None:
    primary = FakeBackend("primary", ["m"], cut=BackendUnavailable("primary broke off"))
    backup = FakeBackend("backup", ["backup"])
    async with fast_app(fast_settings(tmp_path, FALLBACKS), [primary, backup]) as garden:
        response = await ollama_chat(garden.client, "m", stream=True)
    first, last = streamed(response)
    assert first["message"]["content"] == "from primary"
    assert last == {"error": "primary broke off"}
    assert len(primary.sent) == 1 and backup.sent == []


async def test_a_remote_stream_cut_mid_answer_is_not_retried_on_its_replicas(
    tmp_path: Path,
) -> None:
    async with (
        upstream("a", cut=True) as a,
        upstream("b") as b,
        replica_pair(tmp_path, a, b, retries=2) as garden,
    ):
        response = await ollama_chat(garden.client, "m", stream=True)
    first, last = streamed(response)
    assert first["message"]["content"] == "from a"
    assert "stopped answering mid-response" in last["error"]
    assert len(a.received) == 1 and b.received == []


#: A whole answer of OpenAI's Responses API as it comes: ``"error": null`` when all went well.
RESPONSES_ANSWER = {
    "id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
    "error": None, "incomplete_details": None, "model": "m",
    "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "from responses", "annotations": []}]}],
    "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
}  # fmt: skip


class ResponsesBackend(FakeBackend):
    """A backend that speaks only OpenAI's Responses API (``apis = ["responses"]``)."""

    async def send(self, request: BackendRequest) -> BackendResponse:
        self.sent.append(request)

        async def body() -> AsyncIterator[bytes]:
            yield orjson.dumps(RESPONSES_ANSWER)

        return BackendResponse(200, "application/json", body(), Api.RESPONSES)


async def test_a_whole_responses_answer_is_translated_for_every_family(tmp_path: Path) -> None:
    backend = ResponsesBackend("r", ["m"], apis=frozenset({Api.RESPONSES}))
    async with fast_app(fast_settings(tmp_path), [backend]) as garden:
        openai_chat = {"model": "m", "messages": HI}
        chat = await garden.client.post("/v1/chat/completions", json=openai_chat)
        assert said(chat) == "from responses"
        assert said(await ollama_chat(garden.client, "m")) == "from responses"
        anthropic = {**openai_chat, "max_tokens": 8}
        assert said(await garden.client.post("/v1/messages", json=anthropic)) == "from responses"
