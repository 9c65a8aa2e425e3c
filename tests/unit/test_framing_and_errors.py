"""NDJSON framing of relayed streams, and the mapping of typed errors to responses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from modelgarden import errors
from modelgarden.api.errors import ollama_error, ollama_error_line, openai_error
from modelgarden.api.streaming import NDJSON, ClientWatch, RelayResponse
from modelgarden.backends.base import Api, BackendResponse

DONE = b'{"model":"m","response":"","done":true,"done_reason":"stop","eval_count":3}\n'
CHUNK = b'{"model":"m","response":"hi","done":false}\n'


@pytest.mark.parametrize(
    ("tail", "complete"),
    [
        (CHUNK + DONE, True),
        (DONE, True),
        (b'{"error":"boom"}\n', True),
        (CHUNK, False),
        (b"", False),
        (CHUNK + b'{"model":"m","done": true}\n', True),
        (CHUNK + DONE[:-10], False),
    ],
)
def test_ndjson_completeness(tail: bytes, complete: bool) -> None:
    assert NDJSON.complete(tail) is complete


def test_error_line_is_one_json_object_and_newline() -> None:
    line = ollama_error_line('bad "thing"\nhappened')
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert orjson.loads(line) == {"error": 'bad "thing"\nhappened'}


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.BadRequest("x"), 400),
        (errors.InvalidModelName("x"), 400),
        (errors.UnsupportedCapability("x"), 400),
        (errors.Unauthorized("x"), 401),
        (errors.Forbidden("x"), 403),
        (errors.ModelNotFound("m"), 404),
        (errors.PayloadTooLarge("x"), 413),
        (errors.RateLimited("x", retry_after=2.4), 429),
        (errors.ClientClosed("x"), 499),
        (errors.RunnerFailed("x"), 500),
        (errors.BackendUnavailable("x"), 502),
        (errors.Overloaded(errors.SERVER_BUSY), 503),
        (errors.UpstreamTimeout("x"), 504),
    ],
)
def test_each_error_maps_to_its_status_in_both_shapes(exc: errors.GardenError, status: int) -> None:
    ollama = ollama_error(exc)
    assert ollama.status_code == status
    assert orjson.loads(ollama.body) == {"error": exc.message}
    openai = openai_error(exc)
    assert openai.status_code == status
    body = orjson.loads(openai.body)["error"]
    assert body["message"] == exc.message and body["type"] == exc.kind
    assert set(body) == {"message", "type", "param", "code"}
    if exc.retry_after is not None:
        assert ollama.headers["retry-after"] == "2" and openai.headers["retry-after"] == "2"


def test_model_not_found_message_and_openai_code() -> None:
    exc = errors.ModelNotFound("llama9")
    assert exc.message == "model 'llama9' not found"
    assert orjson.loads(openai_error(exc).body)["error"]["code"] == "model_not_found"


def _upstream(chunks: list[bytes], fail: errors.GardenError | None = None) -> BackendResponse:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
        if fail is not None:
            raise fail

    return BackendResponse(200, "application/x-ndjson", body(), Api.OLLAMA)


async def _run(response: RelayResponse) -> tuple[int, bytes]:
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        await asyncio.sleep(3600)  # the client never disconnects
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await response({"type": "http"}, receive, send)  # type: ignore[arg-type]
    status = int(sent[0]["status"])  # type: ignore[call-overload]
    return status, b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]


def _relay(upstream: BackendResponse, stream: bool) -> RelayResponse:
    async def never() -> dict[str, object]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    return RelayResponse(upstream, stream=stream, watch=ClientWatch(never))


async def test_relay_passes_a_complete_stream_unchanged() -> None:
    status, body = await _run(_relay(_upstream([CHUNK, CHUNK, DONE]), stream=True))
    assert status == 200 and body == CHUNK + CHUNK + DONE


async def test_relay_ends_a_failed_stream_with_an_error_line() -> None:
    upstream = _upstream([CHUNK], errors.RunnerFailed("runner died"))
    status, body = await _run(_relay(upstream, stream=True))
    assert status == 200
    lines = body.splitlines()
    assert lines[0] == CHUNK.strip() and orjson.loads(lines[-1]) == {"error": "runner died"}


async def test_relay_ends_a_truncated_stream_with_an_error_line() -> None:
    _, body = await _run(_relay(_upstream([CHUNK]), stream=True))
    assert "error" in orjson.loads(body.splitlines()[-1])


async def test_whole_answer_with_an_error_gets_a_real_status() -> None:
    status, body = await _run(_relay(_upstream([b'{"error":"bad template"}']), stream=False))
    assert status == 500 and orjson.loads(body) == {"error": "bad template"}
    upstream = _upstream([], errors.RunnerFailed("gone"))
    status, body = await _run(_relay(upstream, stream=False))
    assert status == 500 and orjson.loads(body) == {"error": "gone"}


async def test_a_long_final_record_split_across_chunks_is_recognised() -> None:
    final = orjson.dumps({"model": "m", "response": "", "done": True, "context": list(range(5000))})
    parts = [CHUNK, CHUNK + final[:7000], final[7000:15000], final[15000:] + b"\n"]
    relay = _relay(_upstream(parts), stream=True)
    status, body = await _run(relay)
    assert status == 200
    assert body == CHUNK + CHUNK + final + b"\n"
    assert relay.tail == final + b"\n"


def test_a_value_that_fits_no_branch_of_a_union_names_the_field_and_every_branch() -> None:
    from pydantic import ValidationError

    from modelgarden.api.body import describe
    from modelgarden.wire.responses import ResponsesRequest

    with pytest.raises(ValidationError) as caught:
        ResponsesRequest.model_validate({"model": "m", "input": 5})
    assert describe(caught.value) == (
        "invalid request: input: Input should be a valid string, or a valid list",
        "input",
    )


async def test_a_whole_answer_that_fails_full_gets_each_familys_status() -> None:
    """A full queue met while a whole answer is read: 503 on Ollama's API, 529 on
    Anthropic's (its overloaded_error), the same status its error body names."""
    from modelgarden.api.streaming import ANTHROPIC_SSE

    full = errors.Overloaded("queue full")
    ollama = RelayResponse(_upstream([], fail=full), stream=False, watch=ClientWatch(_never))
    assert (await _run(ollama))[0] == 503
    anthropic = RelayResponse(
        _upstream([], fail=full), stream=False, watch=ClientWatch(_never), framing=ANTHROPIC_SSE
    )
    status, body = await _run(anthropic)
    assert status == 529
    assert orjson.loads(body)["error"]["type"] == "overloaded_error"


async def _never() -> dict[str, object]:
    await asyncio.sleep(3600)
    return {"type": "http.disconnect"}
