"""Bad input gets Ollama's error shape and the right status, never a traceback."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL, GardenServer

CASES = [
    # (method, path, body, status, message fragment)
    ("POST", "/api/chat", b"{not json", 400, "invalid JSON"),
    ("POST", "/api/chat", b"", 400, "missing request body"),
    ("POST", "/api/chat", b"[1, 2]", 400, "JSON object"),
    ("POST", "/api/chat", b'{"messages": []}', 400, "model is required"),
    (
        "POST",
        "/api/generate",
        b'{"model": "../../etc/passwd", "prompt": "x"}',
        400,
        "invalid model name",
    ),
    (
        "POST",
        "/api/generate",
        b'{"model": "smollm2:135m", "prompt": "x", "keep_alive": "soon"}',
        400,
        "keep_alive",
    ),
    (
        "POST",
        "/api/generate",
        b'{"model": "smollm2:135m", "prompt": "x", "options": {"temperature": "hot"}}',
        400,
        "temperature",
    ),
    ("POST", "/api/generate", b'{"model": "smollm2:135m", "prompt": 5}', 400, "prompt"),
    (
        "POST",
        "/api/chat",
        b'{"model": "smollm2:135m", "messages": [{"content": "x"}]}',
        400,
        "role",
    ),
    (
        "POST",
        "/api/generate",
        b'{"model": "smollm2:135m", "prompt": "x", "suffix": "y"}',
        400,
        "does not support insert",
    ),
    (
        "POST",
        "/api/generate",
        b'{"model": "smollm2:135m", "prompt": "x", "think": true}',
        400,
        "does not support thinking",
    ),
    (
        "POST",
        "/api/generate",
        b'{"model": "smollm2:135m", "prompt": "x", "images": ["aGk="]}',
        400,
        "does not support images",
    ),
    (
        "POST",
        "/api/generate",
        b'{"model": "smollm2:135m", "prompt": "x", "format": "xml"}',
        400,
        "format",
    ),
    (
        "POST",
        "/api/generate",
        b'{"model": "smollm2:135m", "prompt": "x", "template": "{{ .Prompt "}',
        400,
        "template",
    ),
    ("POST", "/api/embed", b'{"model": "smollm2:135m", "input": []}', 400, "input"),
    (
        "POST",
        "/api/embed",
        b'{"model": "smollm2:135m", "input": "x", "dimensions": -3}',
        400,
        "dimensions",
    ),
    ("POST", "/api/show", b'{"model": "missing:tag"}', 404, "not found"),
    ("POST", "/api/copy", b'{"source": "missing", "destination": "x"}', 404, "not found"),
    (
        "POST",
        "/api/copy",
        b'{"source": "smollm2:135m", "destination": "a/b/c/d"}',
        400,
        "invalid model name",
    ),
    ("DELETE", "/api/delete", b'{"model": "missing"}', 404, "not found"),
    ("POST", "/api/create", b'{"model": "x"}', 400, "neither 'from' nor 'files'"),
    (
        "POST",
        "/api/create",
        b'{"model": "x", "files": {"a.gguf": "sha256:' + b"0" * 64 + b'"}}',
        400,
        "not found",
    ),
    (
        "POST",
        "/api/create",
        b'{"model": "x", "from": "smollm2:135m", "quantize": "q4_0"}',
        400,
        "quantize",
    ),
    ("POST", "/api/blobs/sha256:nothex", b"data", 400, "invalid digest"),
    ("POST", "/api/blobs/sha256:" + "0" * 64, b"data", 400, "digest mismatch"),
    ("GET", "/api/nothing-here", b"", 404, "not found"),
    ("DELETE", "/api/tags", b"", 405, "not allowed"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), CASES)
def test_bad_request_gets_ollama_error(
    garden: GardenServer, method: str, path: str, body: bytes, status: int, fragment: str
) -> None:
    response = httpx.request(method, garden.url + path, content=body, timeout=30)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert set(payload) == {"error"}
    assert fragment.lower() in payload["error"].lower()
    assert "Traceback" not in response.text


def test_rejected_blob_leaves_nothing_behind(garden: GardenServer) -> None:
    before = sorted(p.name for p in (garden.models / "blobs").iterdir())
    httpx.post(garden.url + "/api/blobs/sha256:" + "1" * 64, content=b"x" * 100_000, timeout=30)
    after = sorted(p.name for p in (garden.models / "blobs").iterdir())
    assert after == before


def test_blob_upload_and_head(garden: GardenServer) -> None:
    import hashlib

    data = b"hello blob"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert httpx.head(f"{garden.url}/api/blobs/{digest}").status_code == 404
    assert httpx.post(f"{garden.url}/api/blobs/{digest}", content=data).status_code == 201
    assert httpx.head(f"{garden.url}/api/blobs/{digest}").status_code == 200


def test_root_and_version(garden: GardenServer) -> None:
    root = httpx.get(garden.url + "/")
    assert root.status_code == 200 and root.text == "Ollama is running"
    assert httpx.head(garden.url + "/").status_code == 200
    version = httpx.get(garden.url + "/api/version").json()["version"]
    assert all(part.isdigit() for part in version.split("."))


def test_show_accepts_the_legacy_name_field(garden: GardenServer) -> None:
    response = httpx.post(garden.url + "/api/show", json={"name": DEFAULT_MODEL})
    assert response.status_code == 200
    body = response.json()
    assert body["model_info"]["general.architecture"] == "llama"
    assert "capabilities" in body and "tools" in body["capabilities"]


def test_non_streamed_answer_is_plain_json(garden: GardenServer) -> None:
    response = httpx.post(
        garden.url + "/api/chat",
        json={
            "model": DEFAULT_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": False,
            "options": {"num_predict": 3, "temperature": 0},
        },
        timeout=60,
    )
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["done"] is True and body["message"]["role"] == "assistant"


def test_streamed_answer_is_ndjson_without_blank_lines(garden: GardenServer) -> None:
    body = {
        "model": DEFAULT_MODEL,
        "prompt": "Hello",
        "options": {"num_predict": 5, "temperature": 0},
    }
    with httpx.stream("POST", garden.url + "/api/generate", json=body, timeout=60) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        raw = response.read()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert lines and all(line.startswith(b"{") and line.endswith(b"}") for line in lines)


def test_bad_query_parameters_are_one_line_errors(garden: GardenServer) -> None:
    answer = httpx.get(garden.url + "/garden/series", params={"minutes": "abc"})
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid request: minutes: Input should be a valid integer, "
        "unable to parse string as an integer"
    }
