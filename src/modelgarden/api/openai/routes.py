"""The OpenAI-compatible routes under ``/v1`` (Chat Completions, completions, embeddings,
models, and the Responses API): thin, over the same dispatch as ``/api``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from modelgarden.api.body import read_json, validate
from modelgarden.api.dispatch import Incoming, dispatch
from modelgarden.api.ollama.inference import keep_alive_of
from modelgarden.api.openapi import body_schema
from modelgarden.api.state import app_state
from modelgarden.backends.base import Api
from modelgarden.errors import ModelNotFound
from modelgarden.security.auth import visible
from modelgarden.store.names import ModelName
from modelgarden.translate import openai as oa
from modelgarden.translate import responses as rs
from modelgarden.types import InferenceRequest
from modelgarden.wire.ollama import ListModel
from modelgarden.wire.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    Model,
    ModelList,
)
from modelgarden.wire.responses import ResponsesRequest

router = APIRouter(prefix="/v1", tags=["openai"])


async def _incoming(
    request: Request, wire: type[BaseModel], kind: str, to_neutral: Any, api: Api = Api.OPENAI
) -> Incoming:
    data = await read_json(request)
    validate(wire, data)
    req: InferenceRequest = to_neutral(data)  # validates the mapping, raises 400s
    ModelName.parse(req.model)
    return Incoming(
        api=api,
        kind=kind,
        model=req.model,
        body=data,
        stream=req.stream if kind != "embed" else False,
        keep_alive=keep_alive_of(req.keep_alive),
        neutral=lambda: req,
        relax_think=api is Api.RESPONSES,
    )


@router.post("/chat/completions", openapi_extra=body_schema(ChatCompletionRequest))
async def chat_completions(request: Request) -> Any:
    """Chat completion; ``stream`` gives server-sent events ending ``data: [DONE]``."""
    incoming = await _incoming(request, ChatCompletionRequest, "chat", oa.chat_request_in)
    return await dispatch(request, incoming)


@router.post("/completions", openapi_extra=body_schema(CompletionRequest))
async def completions(request: Request) -> Any:
    """Text completion of a raw prompt (no chat template)."""
    incoming = await _incoming(request, CompletionRequest, "completion", oa.completion_request_in)
    return await dispatch(request, incoming)


@router.post("/responses", openapi_extra=body_schema(ResponsesRequest))
async def responses(request: Request) -> Any:
    """A response (OpenAI's Responses API, stateless); ``stream`` gives its events."""
    incoming = await _incoming(request, ResponsesRequest, "chat", rs.request_in, Api.RESPONSES)
    return await dispatch(request, incoming)


@router.post("/embeddings", openapi_extra=body_schema(EmbeddingRequest))
async def embeddings(request: Request) -> Any:
    """Embeddings; ``encoding_format: base64`` gives little-endian float32."""
    incoming = await _incoming(request, EmbeddingRequest, "embed", oa.embedding_request_in)
    return await dispatch(request, incoming)


def _model(entry: ListModel) -> Model:
    owner = entry.name.split("/")[0] if "/" in entry.name else "library"
    return Model(id=entry.name, created=int(entry.modified_at.timestamp()), owned_by=owner)


@router.get("/models", response_model=ModelList)
async def models(request: Request) -> Response:
    """Every model the gateway serves."""
    gateway = app_state(request).gateway
    entries = visible(request.scope, await gateway.list_models())
    listing = ModelList(data=[_model(m) for m in entries])
    return Response(listing.model_dump_json().encode(), media_type="application/json")


@router.get("/models/{model_id:path}", response_model=Model)
async def model(request: Request, model_id: str) -> Response:
    """One model, or 404."""
    gateway = app_state(request).gateway
    name = str(ModelName.parse(model_id))
    for entry in visible(request.scope, await gateway.list_models()):
        if entry.name == name:
            return Response(_model(entry).model_dump_json().encode(), media_type="application/json")
    raise ModelNotFound(model_id, f"The model '{model_id}' does not exist")
