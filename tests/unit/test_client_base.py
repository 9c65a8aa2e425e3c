"""Tests for the client's I/O-free logic (``modelgarden.client._base``)."""

from __future__ import annotations

import orjson
import pytest
from pydantic import BaseModel

from modelgarden.client import errors
from modelgarden.client._base import (
    Call,
    drop_none,
    parse_body,
    parse_line,
    raise_for,
    resolve_host,
)


@pytest.fixture(autouse=True)
def no_host_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GARDEN_HOST", raising=False)
    monkeypatch.delenv("OLLAMA_HOST", raising=False)


# --- resolve_host ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("example.com", "http://example.com:11434"),
        ("example.com:8080", "http://example.com:8080"),
        (":8080", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:5000", "http://127.0.0.1:5000"),
        ("http://0.0.0.0:11434", "http://127.0.0.1:11434"),
        ("[::]:9000", "http://127.0.0.1:9000"),
        ("[::1]:9000", "http://[::1]:9000"),
        ("http://example.com:9000", "http://example.com:9000"),
        ("http://example.com:9000/prefix", "http://example.com:9000/prefix"),
        ("http://example.com:9000/a/b/", "http://example.com:9000/a/b"),
        ("https://example.com:8443", "https://example.com:8443"),
        ("https://example.com:8443/ollama", "https://example.com:8443/ollama"),
    ],
)
def test_resolve_host(host: str | None, expected: str) -> None:
    assert resolve_host(host) == expected


def test_https_without_port_uses_443() -> None:
    # As the reference Ollama client does: an https URL without a port is port 443, not
    # the gateway's 11434 (a TLS proxy in front of it).
    assert resolve_host("https://example.com") == "https://example.com:443"


def test_ollama_host_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "o.example:1")
    assert resolve_host() == "http://o.example:1"


def test_garden_host_beats_ollama_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "o.example:1")
    monkeypatch.setenv("GARDEN_HOST", "g.example:2")
    assert resolve_host() == "http://g.example:2"


def test_argument_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "o.example:1")
    monkeypatch.setenv("GARDEN_HOST", "g.example:2")
    assert resolve_host("a.example:3") == "http://a.example:3"


def test_env_url_keeps_scheme_and_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "https://proxy.example:8443/garden/")
    assert resolve_host() == "https://proxy.example:8443/garden"


def test_bad_port_is_rejected() -> None:
    with pytest.raises(ValueError, match="port"):
        resolve_host("example.com:99999")


# --- raise_for -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequest),
        (401, errors.Unauthorized),
        (403, errors.Unauthorized),
        (404, errors.ModelNotFound),
        (429, errors.RateLimited),
        (503, errors.Overloaded),
        (500, errors.ServerError),
        (502, errors.ServerError),
        (504, errors.ServerError),
        (409, errors.ResponseError),
        (418, errors.ResponseError),
    ],
)
def test_status_maps_to_typed_error(status: int, cls: type[errors.ResponseError]) -> None:
    with pytest.raises(cls) as info:
        raise_for(status, b'{"error": "it went wrong"}', None)
    assert type(info.value) is cls
    assert info.value.status_code == status
    assert str(info.value) == "it went wrong"
    assert info.value.error == "it went wrong"
    assert isinstance(info.value, errors.ClientError)


@pytest.mark.parametrize(
    "body",
    [
        b'{"error": "model \'x\' not found"}',
        b'{"error": {"message": "model \'x\' not found", "type": "not_found_error"}}',
    ],
)
def test_message_from_both_error_shapes(body: bytes) -> None:
    with pytest.raises(errors.ModelNotFound) as info:
        raise_for(404, body, None)
    assert str(info.value) == "model 'x' not found"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"upstream exploded\n", "upstream exploded"),
        (b"", "HTTP 500"),
        (b"   ", "HTTP 500"),
    ],
)
def test_non_json_body(body: bytes, message: str) -> None:
    with pytest.raises(errors.ServerError) as info:
        raise_for(500, body, None)
    assert str(info.value) == message


def test_json_without_error_key_uses_whole_body() -> None:
    with pytest.raises(errors.BadRequest) as info:
        raise_for(400, orjson.dumps({"detail": "nope"}), None)
    assert "nope" in str(info.value)


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (429, "2", 2.0),
        (429, "2.5", 2.5),
        (503, "30", 30.0),
        (429, None, None),
        (429, "", None),
        (429, "soon", None),
        (429, "Wed, 21 Oct 2015 07:28:00 GMT", None),
        (429, "-1", None),
    ],
)
def test_retry_after(status: int, retry_after: str | None, expected: float | None) -> None:
    with pytest.raises(errors.ResponseError) as info:
        raise_for(status, b'{"error": "busy"}', retry_after)
    assert info.value.retry_after == expected


@pytest.mark.parametrize("status", [200, 201, 204, 301, 399])
def test_success_does_not_raise(status: int) -> None:
    raise_for(status, b'{"error": "ignored"}', "5")  # returns without raising


# --- parse_line / parse_body / helpers -----------------------------------------------------------


class Chunk(BaseModel):
    response: str
    done: bool = False


@pytest.mark.parametrize("line", [b"", b"\n", b"  \r\n", b"\t"])
def test_parse_line_blank_is_none(line: bytes) -> None:
    assert parse_line(line, Chunk) is None


def test_parse_line_record() -> None:
    chunk = parse_line(b'{"response": "hi", "done": true}\n', Chunk)
    assert chunk == Chunk(response="hi", done=True)


def test_parse_line_error_record_raises_stream_error() -> None:
    with pytest.raises(errors.StreamError) as info:
        parse_line(b'{"error": "out of memory"}\n', Chunk)
    assert str(info.value) == "out of memory"
    assert not isinstance(info.value, errors.ResponseError)


def test_parse_body() -> None:
    assert parse_body(b'{"response": "x"}', Chunk) == Chunk(response="x")


def test_drop_none() -> None:
    assert drop_none({"a": 1, "b": None, "c": False, "d": 0}) == {"a": 1, "c": False, "d": 0}


def test_call_defaults() -> None:
    call = Call("GET", "/api/tags")
    assert (call.json, call.stream) == (None, False)
