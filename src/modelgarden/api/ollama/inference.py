"""Ollama's inference routes: ``/api/generate``, ``/api/chat``, ``/api/embed``, ``/api/embeddings``.

Thin: parse and validate, then hand over to :func:`~modelgarden.api.dispatch.dispatch`.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from modelgarden.api.body import parse
from modelgarden.api.dispatch import Incoming, dispatch
from modelgarden.api.openapi import body_schema
from modelgarden.backends.base import Api
from modelgarden.durations import parse_keep_alive
from modelgarden.errors import BadRequest, GardenError
from modelgarden.store.names import ModelName
from modelgarden.translate import ollama as ot
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


def incoming(
    kind: str, model: str, data: dict[str, Any], stream: bool, keep_alive: Any
) -> Incoming:
    """An Ollama request ready for dispatch."""
    ModelName.parse(model)
    to_neutral = {
        "chat": ot.chat_request_in,
        "completion": ot.generate_request_in,
        "embed": ot.embed_request_in,
    }[kind]
    return Incoming(
        api=Api.OLLAMA,
        kind=kind,
        model=model,
        body=data,
        stream=stream,
        keep_alive=keep_alive_of(keep_alive),
        neutral=lambda: to_neutral(data),
    )


@router.post("/api/generate", openapi_extra=body_schema(GenerateRequest))
async def generate(request: Request) -> Any:
    """Generate a completion for a prompt (streamed as NDJSON unless ``stream`` is false)."""
    req, data = await parse(request, GenerateRequest)
    stream = req.stream is not False
    return await dispatch(request, incoming("completion", req.model, data, stream, req.keep_alive))


@router.post("/api/chat", openapi_extra=body_schema(ChatRequest))
async def chat(request: Request) -> Any:
    """Answer a chat (streamed as NDJSON unless ``stream`` is false)."""
    req, data = await parse(request, ChatRequest)
    stream = req.stream is not False
    return await dispatch(request, incoming("chat", req.model, data, stream, req.keep_alive))


@router.post("/api/embed", openapi_extra=body_schema(EmbedRequest))
async def embed(request: Request) -> Any:
    """Embed one input or a list: one normalised vector per input."""
    req, data = await parse(request, EmbedRequest)
    if isinstance(req.input, list) and not req.input:
        raise BadRequest("input must not be empty", param="input")
    return await dispatch(request, incoming("embed", req.model, data, False, req.keep_alive))


@router.post("/api/embeddings", openapi_extra=body_schema(EmbeddingsRequest))
async def embeddings(request: Request) -> Any:
    """Legacy single embedding: ``{"embedding": [...]}``."""
    req, _ = await parse(request, EmbeddingsRequest)
    data = {"model": req.model, "input": [req.prompt], "options": req.options or {}}
    relay = await dispatch(request, incoming("embed", req.model, data, False, req.keep_alive))
    try:
        parts = [chunk async for chunk in relay.upstream.body]
    finally:
        relay.watch.stop()
        await relay.upstream.close()
    raw = b"".join(parts)
    result = orjson.loads(raw)
    if "error" in result:
        raise GardenError(str(result["error"]))
    vectors = result.get("embeddings") or [[]]
    response = Response(orjson.dumps({"embedding": vectors[0]}), media_type="application/json")
    if relay.meter is not None:
        response.raw_headers.extend(relay.meter.headers())
        relay.meter.finish(200, tail=raw)
    return response
