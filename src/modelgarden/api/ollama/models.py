"""Ollama's catalogue and model-management routes.

``/``, ``/api/version``, ``/api/status``, ``/api/tags``, ``/api/show``, ``/api/ps``, ``/api/copy``,
``/api/delete``, ``/api/create`` and ``/api/blobs/:digest``. Management acts on the
gateway's own store (the ``local`` backend); file work runs in threads.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from modelgarden import OLLAMA_COMPAT_VERSION
from modelgarden.api.body import parse
from modelgarden.api.openapi import body_schema
from modelgarden.api.state import app_state
from modelgarden.errors import BadRequest
from modelgarden.gateway import Gateway
from modelgarden.security.auth import check_model, visible
from modelgarden.store.blobs import parse_digest
from modelgarden.store.create import CreateSpec, create_model
from modelgarden.store.modelfile import Modelfile, parse_modelfile
from modelgarden.store.names import ModelName
from modelgarden.wire.ollama import (
    CopyRequest,
    CreateRequest,
    ListResponse,
    ModelRef,
    PsResponse,
    ShowResponse,
)

router = APIRouter(tags=["ollama"])
JSON = "application/json"


def _gateway(request: Request) -> Gateway:
    return app_state(request).gateway


def _json(model: Any) -> Response:
    return Response(model.model_dump_json().encode(), media_type=JSON)


@router.api_route("/", methods=["GET", "HEAD"], response_class=PlainTextResponse)
async def root() -> PlainTextResponse:
    """Health probe that Ollama clients use."""
    return PlainTextResponse("Ollama is running")


@router.api_route("/api/version", methods=["GET", "HEAD"])
async def version() -> Response:
    """The Ollama API version this gateway is compatible with."""
    return Response(orjson.dumps({"version": OLLAMA_COMPAT_VERSION}), media_type=JSON)


@router.get("/api/status")
async def api_status() -> Response:
    """Ollama's server status: its cloud models are off here (the gateway has its own
    remote backends, configured in ``garden.toml``)."""
    body = {"cloud": {"disabled": True, "source": "config"}}
    return Response(orjson.dumps(body), media_type=JSON)


@router.api_route("/api/tags", methods=["GET", "HEAD"], response_model=ListResponse)
async def tags(request: Request) -> Response:
    """Installed models (every backend's, each name once)."""
    models = await _gateway(request).list_models()
    return _json(ListResponse(models=visible(request.scope, models)))


@router.post("/api/show", response_model=ShowResponse, openapi_extra=body_schema(ModelRef))
async def show(request: Request) -> Response:
    """A model's Modelfile, parameters, template, details, metadata and capabilities."""
    req, _ = await parse(request, ModelRef)
    ModelName.parse(req.target)
    check_model(request.scope, req.target)
    return _json(await _gateway(request).show(req.target, bool(req.verbose)))


@router.get("/api/ps", response_model=PsResponse)
async def ps(request: Request) -> Response:
    """Models loaded in memory now."""
    return _json(PsResponse(models=visible(request.scope, await _gateway(request).running())))


@router.post("/api/copy", openapi_extra=body_schema(CopyRequest))
async def copy(request: Request) -> Response:
    """Give a model a second name (no weights are copied)."""
    req, _ = await parse(request, CopyRequest)
    if not req.source or not req.destination:
        raise BadRequest("source and destination are required")
    ModelName.parse(req.destination)
    store = _gateway(request).store
    await asyncio.to_thread(store.copy, req.source, req.destination)
    return Response(status_code=200)


@router.delete("/api/delete", openapi_extra=body_schema(ModelRef))
async def delete(request: Request) -> Response:
    """Remove a model, and any blob no other model uses."""
    req, _ = await parse(request, ModelRef)
    await _gateway(request).local.delete(req.target)
    return Response(status_code=200)


@router.post("/api/create", openapi_extra=body_schema(CreateRequest))
async def create(request: Request) -> Response:
    """Create a model from an uploaded GGUF blob, or derive one from an installed model."""
    req, _ = await parse(request, CreateRequest)
    if req.quantize:
        raise BadRequest("quantize is not supported: create from an already quantized GGUF")
    spec = create_spec(req)
    store = _gateway(request).store
    records = await asyncio.to_thread(lambda: list(create_model(store, spec)))
    if req.stream is False:
        return Response(orjson.dumps(records[-1]), media_type=JSON)
    body = b"".join(orjson.dumps(r) + b"\n" for r in records)
    return Response(body, media_type="application/x-ndjson")


#: Fields of ``/api/create`` that older clients send; any other unknown field is a 400.
_CREATE_EXTRAS = frozenset({"modelfile", "adapters", "path", "insecure"})


def create_spec(req: CreateRequest) -> CreateSpec:
    """What a create asks for: its JSON fields, over a ``modelfile`` older clients send."""
    extra = set(req.model_extra or {})
    if unknown := sorted(extra - _CREATE_EXTRAS):
        raise BadRequest(f"unknown field(s) for /api/create: {', '.join(unknown)}")
    if (req.model_extra or {}).get("adapters"):
        raise BadRequest("adapters are not supported: LoRA adapters cannot be loaded here")
    if (req.model_extra or {}).get("path"):
        raise BadRequest("path is not supported: upload the GGUF (POST /api/blobs) and send files")
    licenses = [req.license] if isinstance(req.license, str) else req.license
    spec = CreateSpec(
        model=req.model or req.name,
        from_=req.from_,
        files=req.files or {},
        template=req.template,
        system=req.system,
        parameters=req.parameters,
        messages=[m.model_dump(exclude_none=True) for m in req.messages] if req.messages else None,
        license=licenses,
    )
    text = (req.model_extra or {}).get("modelfile")
    if text:
        if not isinstance(text, str):
            raise BadRequest("modelfile must be a string")
        _apply_modelfile(spec, parse_modelfile(text))
    return spec


def _apply_modelfile(spec: CreateSpec, mf: Modelfile) -> None:
    """Fill what the JSON fields left unset from a Modelfile (a blob as ``FROM @sha256:``)."""
    if mf.from_ and not (spec.from_ or spec.files):
        source = mf.from_.removeprefix("@")
        if source.startswith("sha256:"):
            spec.files = {"model.gguf": source}
        elif source.startswith((".", "/", "~")):
            raise BadRequest(
                f"FROM {mf.from_}: a path on the client; upload the file (POST /api/blobs) and "
                "send it in files"
            )
        else:
            spec.from_ = source
    spec.template = spec.template if spec.template is not None else mf.template
    spec.system = spec.system if spec.system is not None else mf.system
    if spec.parameters is None and mf.parameters:
        spec.parameters = mf.parameters
    if spec.messages is None and mf.messages:
        spec.messages = list(mf.messages)
    if spec.license is None and mf.licenses:
        spec.license = mf.licenses


@router.head("/api/blobs/{digest}")
async def blob_exists(request: Request, digest: str) -> Response:
    """200 when the store holds the blob, 404 otherwise."""
    store = _gateway(request).store
    found = await asyncio.to_thread(store.blobs.has, parse_digest(digest))
    return Response(status_code=200 if found else 404)


@router.post("/api/blobs/{digest}", status_code=201)
async def blob_upload(request: Request, digest: str) -> Response:
    """Upload a blob; it is kept only if its SHA-256 matches ``digest`` (else 400)."""
    expected = parse_digest(digest)
    blobs = _gateway(request).store.blobs
    if await asyncio.to_thread(blobs.has, expected):
        return Response(status_code=201)
    writer = await asyncio.to_thread(blobs.writer)
    try:
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) >= 1 << 22:
                await asyncio.to_thread(writer.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await asyncio.to_thread(writer.write, bytes(buffer))
        await asyncio.to_thread(writer.commit, expected)
    except BaseException:
        await asyncio.to_thread(writer.abort)
        raise
    return Response(status_code=201)
