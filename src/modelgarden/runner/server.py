"""The runner's HTTP face: a tiny ASGI app that the gateway, and only the gateway, calls.

Routes: ``GET /health``, ``POST /api/generate``, ``POST /api/chat``, ``POST /api/embed``.
Bodies are Ollama requests; answers are Ollama records, NDJSON when ``stream`` is true and
one JSON object otherwise. The first record is produced before the status line is sent,
so an error found while preparing (a bad template, a schema that is not valid) still gets
its real status. When the gateway closes the connection, the generation stops.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from modelgarden.errors import BadRequest, GardenError
from modelgarden.runner.service import RunnerService

Records = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]


def _error(exc: GardenError) -> Response:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    headers = request.headers
    body["_start_ns"] = int(headers.get("x-garden-start-ns") or time.time_ns())
    body["_load_ns"] = int(headers.get("x-garden-load-ns") or 0)
    return body


async def _ndjson(
    first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[bytes]:
    try:
        yield orjson.dumps(first) + b"\n"
        async for record in rest:
            yield orjson.dumps(record) + b"\n"
    except GardenError as exc:
        yield orjson.dumps({"error": exc.message}) + b"\n"
    except Exception as exc:  # a llama.cpp failure mid-stream still ends in a record
        yield orjson.dumps({"error": f"runner error: {exc}"}) + b"\n"
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


async def _joined(
    first: dict[str, Any], rest: AsyncIterator[dict[str, Any]], key: str
) -> AsyncIterator[bytes]:
    """Fold a stream into one record: texts concatenated, last record's counters kept."""
    parts: list[str] = []
    calls: list[Any] = []
    logprobs: list[Any] = []
    record = first
    try:
        while True:
            if key == "message":
                parts.append(record["message"].get("content", ""))
                calls.extend(record["message"].get("tool_calls") or [])
            else:
                parts.append(record.get("response", ""))
            logprobs.extend(record.get("logprobs") or [])
            if record.get("done"):
                break
            record = await rest.__anext__()
    except GardenError as exc:
        yield orjson.dumps({"error": exc.message})
        return
    except Exception as exc:  # a llama.cpp failure still ends in a record
        yield orjson.dumps({"error": f"runner error: {exc}"})
        return
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
    final = dict(record)
    if key == "message":
        final["message"] = {"role": "assistant", "content": "".join(parts)}
        if calls:
            final["message"]["tool_calls"] = calls
    else:
        final["response"] = "".join(parts)
    if logprobs:
        final["logprobs"] = logprobs
    yield orjson.dumps(final)


def _endpoint(pick: Callable[[RunnerService], Records], key: str) -> Callable[[Request], Any]:
    async def handle(request: Request) -> Response:
        service: RunnerService = request.app.state.service
        try:
            body = await _body(request)
            records = pick(service)(body)
            first = await records.__anext__()
        except GardenError as exc:
            return _error(exc)
        except Exception as exc:  # never a traceback to the gateway
            return JSONResponse({"error": f"runner error: {exc}"}, status_code=500)
        if body.get("stream", True) is not False:
            return StreamingResponse(_ndjson(first, records), media_type="application/x-ndjson")
        return StreamingResponse(_joined(first, records, key), media_type="application/json")

    return handle


async def embed(request: Request) -> Response:
    service: RunnerService = request.app.state.service
    try:
        result = await service.embed(await _body(request))
    except GardenError as exc:
        return _error(exc)
    return Response(orjson.dumps(result), media_type="application/json")


async def health(request: Request) -> Response:
    engine = request.app.state.service.engine
    return JSONResponse({"status": "ok", "busy": engine.lock.locked(), "n_ctx": engine.n_ctx})


def build_app(service: RunnerService) -> Starlette:
    """The runner's ASGI app around a ready :class:`RunnerService`."""
    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/api/chat", _endpoint(lambda s: s.chat, "message"), methods=["POST"]),
            Route("/api/generate", _endpoint(lambda s: s.generate, "response"), methods=["POST"]),
            Route("/api/embed", embed, methods=["POST"]),
        ]
    )
    app.state.service = service
    return app
