"""Property tests for what reads raw client input at the edge: headers, sizes, durations,
JSON bodies against the wire models. Whatever comes in, the answer is a value or the
documented error, never another exception."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgarden.api.body import validate
from modelgarden.api.guard import DEFAULT_ORIGINS, allowed_host, origin_pattern
from modelgarden.config import parse_bytes
from modelgarden.errors import BadRequest
from modelgarden.security.auth import INFERENCE, required, secret_of
from modelgarden.security.keys import expiry
from modelgarden.wire.ollama import ChatRequest, EmbedRequest, GenerateRequest, ModelRef
from modelgarden.wire.openai import ChatCompletionRequest

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    ["model", "messages", "prompt", "options", "stream", "format", "keep_alive", "tools", "input"]
)
BODIES = st.dictionaries(FIELDS | st.text(max_size=8), JSON, max_size=6)


def outcome(fn: Any, *args: Any) -> Any:
    """What ``fn`` returns, or the exception it raises."""
    try:
        return fn(*args)
    except Exception as exc:
        return exc


@given(st.text(max_size=60))
def test_any_host_header_gets_a_verdict(host: str) -> None:
    assert allowed_host(host, frozenset({"garden"})) in (True, False)


@given(st.text(max_size=80))
def test_any_origin_gets_a_verdict(origin: str) -> None:
    pattern = origin_pattern([*DEFAULT_ORIGINS, "https://*.example.com"])
    assert pattern.fullmatch(origin.lower()) is None or origin.lower().startswith(
        ("http", "app:", "file:", "tauri:", "vscode")
    )


@given(st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=40)), max_size=6))
def test_any_headers_give_a_key_or_none(headers: list[tuple[bytes, bytes]]) -> None:
    secret = secret_of(headers)
    assert secret is None or isinstance(secret, str)


@given(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]), st.text(max_size=40))
def test_every_route_has_a_class_and_writes_are_never_public(method: str, path: str) -> None:
    need = required(method, "/" + path)
    assert need in ("public", "user", "admin")
    if method not in ("GET", "HEAD"):
        assert need != "public"
    if need == "user" and method == "POST":
        assert "/" + path in INFERENCE or path == "api/show"


@pytest.mark.parametrize(
    "path",
    ["/api/pull", "/api/delete", "/api/create", "/deploy", "/ollama/api/tags", "/garden/keys"],
)
def test_management_routes_are_admin_only(path: str) -> None:
    for method in ("GET", "POST", "DELETE"):
        assert required(method, path) == "admin"


@given(st.text(max_size=20) | st.integers() | st.floats(allow_nan=False))
def test_sizes_parse_or_say_why(value: Any) -> None:
    result = outcome(parse_bytes, value)
    if isinstance(result, Exception):
        assert isinstance(result, ValueError) and "expected a size" in str(result)
    else:
        assert result >= 0 or isinstance(value, int | float)


@given(st.text(max_size=30))
def test_expiry_parses_or_is_a_bad_request(text: str) -> None:
    when = outcome(expiry, text)
    if isinstance(when, Exception):
        assert isinstance(when, BadRequest) and when.message.startswith("expires:")
    else:
        assert when is None or when > 0


@pytest.mark.parametrize(
    "model", [ChatRequest, GenerateRequest, EmbedRequest, ModelRef, ChatCompletionRequest]
)
@settings(max_examples=40)
@given(body=BODIES)
def test_any_json_body_validates_or_is_a_bad_request(model: Any, body: dict[str, Any]) -> None:
    result = outcome(validate, model, body)
    if isinstance(result, Exception):
        assert isinstance(result, BadRequest)
        assert result.message.startswith("invalid request") and "\n" not in result.message
