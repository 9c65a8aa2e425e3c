"""Ollama's inference routes: ``/api/generate``, ``/api/chat``, ``/api/embed``, ``/api/embeddings``.

Thin: parse and validate, find the backend, hand over, relay the answer.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from modelgarden.api.body import parse
from modelgarden.api.openapi import body_schema
from modelgarden.api.streaming import ClientWatch, RelayResponse
from modelgarden.backends.base import Api, BackendRequest, BackendResponse
from modelgarden.durations import parse_keep_alive
from modelgarden.errors import BadRequest, GardenError
from modelgarden.gateway import Gateway
from modelgarden.store.names import ModelName
from modelgarden.wire.ollama import ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest

router = APIRouter(tags=["ollama"])


def keep_alive_of(value: Any) -> float | None:
    """The request's ``keep_alive`` in seconds, ``None`` when absent."""
    if value is None:
        return None
    try:
        return parse_keep_alive(value)
    except ValueError as exc:
        raise BadRequest(str(exc), param="keep_alive") from None


async def _close(response: BackendResponse) -> None:
    await response.close()


async def open_backend(
    request: Request, breq: BackendRequest
) -> tuple[BackendResponse, ClientWatch]:
    """Route and send the request; leaves the queue if the client disconnects meanwhile."""
    gateway: Gateway = request.app.state.gateway
    route = await gateway.route(breq.model)
    breq.model = route.model
    watch = ClientWatch(request.receive)
    try:
        upstream = await watch.guard(route.backend.send(breq), _close)
    except BaseException:
        watch.stop()
        raise
    return upstream, watch


async def relay(
    request: Request, endpoint: str, model: str, data: dict[str, Any], stream: bool, keep_alive: Any
) -> Response | RelayResponse:
    """The shared tail of the Ollama inference routes."""
    ModelName.parse(model)
    breq = BackendRequest(
        api=Api.OLLAMA,
        endpoint=endpoint,
        model=model,
        body=data,
        stream=stream,
        start_ns=time.time_ns(),
        keep_alive=keep_alive_of(keep_alive),
    )
    upstream, watch = await open_backend(request, breq)
    return RelayResponse(upstream, stream=stream, watch=watch)


@router.post("/api/generate", openapi_extra=body_schema(GenerateRequest))
async def generate(request: Request) -> Any:
    """Generate a completion for a prompt (streamed as NDJSON unless ``stream`` is false)."""
    req, data = await parse(request, GenerateRequest)
    return await relay(
        request, "generate", req.model, data, req.stream is not False, req.keep_alive
    )


@router.post("/api/chat", openapi_extra=body_schema(ChatRequest))
async def chat(request: Request) -> Any:
    """Answer a chat (streamed as NDJSON unless ``stream`` is false)."""
    req, data = await parse(request, ChatRequest)
    return await relay(request, "chat", req.model, data, req.stream is not False, req.keep_alive)


@router.post("/api/embed", openapi_extra=body_schema(EmbedRequest))
async def embed(request: Request) -> Any:
    """Embed one input or a list: one normalised vector per input."""
    req, data = await parse(request, EmbedRequest)
    if isinstance(req.input, list) and not req.input:
        raise BadRequest("input must not be empty", param="input")
    return await relay(request, "embed", req.model, data, False, req.keep_alive)


@router.post("/api/embeddings", openapi_extra=body_schema(EmbeddingsRequest))
async def embeddings(request: Request) -> Any:
    """Legacy single embedding: ``{"embedding": [...]}``."""
    req, _ = await parse(request, EmbeddingsRequest)
    ModelName.parse(req.model)
    breq = BackendRequest(
        api=Api.OLLAMA,
        endpoint="embed",
        model=req.model,
        body={"model": req.model, "input": [req.prompt], "options": req.options or {}},
        stream=False,
        start_ns=time.time_ns(),
        keep_alive=keep_alive_of(req.keep_alive),
    )
    upstream, watch = await open_backend(request, breq)
    try:
        parts = [chunk async for chunk in upstream.body]
    except GardenError:
        raise
    finally:
        watch.stop()
        await upstream.close()
    result = orjson.loads(b"".join(parts))
    if "error" in result:
        raise GardenError(str(result["error"]))
    vectors = result.get("embeddings") or [[]]
    return Response(orjson.dumps({"embedding": vectors[0]}), media_type="application/json")
