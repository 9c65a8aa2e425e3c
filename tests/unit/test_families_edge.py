"""The edge's per-family pieces: error shapes and statuses, which family a path is, token
counts read from each family's answers, and which families a backend speaks natively."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from modelgarden.api.errors import error_response
from modelgarden.api.families import ENCODERS, ENDPOINTS, WHOLE_OUT, family_of
from modelgarden.backends.base import PREFERRED, Api
from modelgarden.backends.remote import AnthropicBackend, OllamaBackend, OpenAIBackend
from modelgarden.config.backends import BackendConfig
from modelgarden.errors import (
    BadRequest,
    Forbidden,
    GardenError,
    ModelNotFound,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)
from modelgarden.telemetry.record import tokens_of


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/v1/messages", Api.ANTHROPIC),
        ("/v1/messages/count_tokens", Api.ANTHROPIC),
        ("/v1/responses", Api.RESPONSES),
        ("/v1/chat/completions", Api.OPENAI),
        ("/v1/messagesx", Api.OPENAI),
        ("/api/chat", Api.OLLAMA),
    ],
)
def test_family_of_a_path(path: str, api: Api) -> None:
    assert family_of(path) is api


@pytest.mark.parametrize(
    ("exc", "status", "kind"),
    [
        (BadRequest("bad"), 400, "invalid_request_error"),
        (Unauthorized("who"), 401, "authentication_error"),
        (Forbidden("no"), 403, "permission_error"),
        (ModelNotFound("m"), 404, "not_found_error"),
        (PayloadTooLarge("big"), 413, "request_too_large"),
        (RateLimited("slow down", retry_after=2), 429, "rate_limit_error"),
        (Overloaded("busy"), 529, "overloaded_error"),
        (GardenError("boom"), 500, "api_error"),
    ],
)
def test_anthropic_errors_have_anthropics_shape_and_statuses(
    exc: GardenError, status: int, kind: str
) -> None:
    response = error_response("/v1/messages", exc)
    assert response.status_code == status
    body = orjson.loads(bytes(response.body))
    assert body == {"type": "error", "error": {"type": kind, "message": exc.message}}
    if isinstance(exc, RateLimited):
        assert response.headers["retry-after"] == "2"


def test_responses_errors_are_openais_and_only_a_missing_model_says_model() -> None:
    missing = orjson.loads(bytes(error_response("/v1/responses", ModelNotFound("m")).body))
    assert missing["error"]["code"] == "model_not_found"
    route = orjson.loads(bytes(error_response("/v1/nothing", NotFound("POST /v1/x")).body))
    assert route["error"]["code"] is None and route["error"]["type"] == "not_found_error"
    assert error_response("/v1/responses", Overloaded("busy")).status_code == 503


@pytest.mark.parametrize(
    ("tail", "prompt", "completion"),
    [
        (b'{"usage":{"input_tokens":12,"cache_read_input_tokens":3,"output_tokens":6}}', 12, 6),
        (
            b'"usage":{"input_tokens":7,"input_tokens_details":{"cached_tokens":0},'
            b'"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0}}',
            7,
            2,
        ),
        (b'{"input_tokens":31}', 31, None),
        (b'{"max_output_tokens":64,"usage":null}', None, None),
    ],
)
def test_token_counts_are_read_from_every_family(
    tail: bytes, prompt: int | None, completion: int | None
) -> None:
    tokens = tokens_of(tail)
    assert (tokens.prompt, tokens.completion) == (prompt, completion)


def _config(kind: str, **extra: object) -> BackendConfig:
    return BackendConfig.model_validate({"name": "b", "kind": kind, "urls": ["http://x"], **extra})


def test_backends_speak_their_kinds_families_and_what_is_configured() -> None:
    assert OllamaBackend(_config("ollama")).apis == {Api.OLLAMA, Api.OPENAI}
    recent = OllamaBackend(_config("ollama", apis=["ollama", "openai", "responses", "anthropic"]))
    assert recent.apis == set(Api)
    assert OpenAIBackend(_config("openai")).apis == {Api.OPENAI}
    assert OpenAIBackend(_config("openai", apis=["responses"])).apis == {Api.RESPONSES}
    assert AnthropicBackend(_config("anthropic")).apis == {Api.ANTHROPIC}
    with pytest.raises(ValidationError, match="speaks some of"):
        _config("openai", apis=["ollama"])
    with pytest.raises(ValidationError, match="speaks some of"):
        _config("anthropic", apis=[])


def test_an_anthropic_backend_named_anthropic_needs_only_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = BackendConfig.model_validate({"name": "anthropic", "kind": "anthropic"})
    assert config.urls == ["https://api.anthropic.com"]
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    headers = AnthropicBackend(config).headers()
    assert headers["x-api-key"] == "sk-ant-test" and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers


def test_every_family_has_its_tables() -> None:
    assert set(PREFERRED) == set(Api) == set(ENDPOINTS)
    for api in Api:
        assert (api, "chat") in ENCODERS and (api, "chat") in WHOLE_OUT
    assert (Api.ANTHROPIC, "count") in WHOLE_OUT
