"""Ollama's ``/api/pull`` and ``/api/push``: models in and out of the gateway's own store.

Both stream NDJSON progress records by default (``stream: false`` gives only the last,
``{"status": "success"}``). The work itself is :class:`modelgarden.store.pull.Puller`'s;
one per app, created on first use, so that concurrent pulls of a blob share its download.
A failure before the first record is an ``{"error": ...}`` with a real status; after it,
the stream's last line.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response, StreamingResponse

from modelgarden.api.body import parse
from modelgarden.api.errors import ollama_error_line, unexpected
from modelgarden.api.openapi import body_schema
from modelgarden.api.state import app_state
from modelgarden.errors import BadRequest, GardenError
from modelgarden.store.pull import Puller

router = APIRouter(tags=["ollama"])
NDJSON = "application/x-ndjson"


class TransferRequest(BaseModel):
    """``POST /api/pull`` and ``/api/push``: ``model`` (or legacy ``name``) and options."""

    model_config = ConfigDict(extra="allow")
    model: str = ""
    name: str = ""
    insecure: bool | None = None
    stream: bool | None = None


def puller(request: Request) -> Puller:
    """The app's :class:`Puller` (created on first use)."""
    state = app_state(request)
    if state.puller is None:
        state.puller = Puller(
            state.gateway.store,
            registry_url=state.settings.registry_url,
            hf_endpoint=state.settings.hf_endpoint,
        )
    return state.puller


async def _request(request: Request) -> TransferRequest:
    req, _ = await parse(request, TransferRequest)
    if not (req.model or req.name):
        raise BadRequest("model is required")
    return req


async def progress_response(
    records: AsyncGenerator[dict[str, Any], None], stream: bool
) -> Response:
    """Send progress records: NDJSON, or only the last one when not streaming.

    The first record is awaited before the response starts, so an early failure gets its
    own status; a later one becomes the stream's last line.
    """
    try:
        first = await anext(records)
    except BaseException:
        await records.aclose()
        raise
    if not stream:
        last = first
        try:
            async for record in records:
                last = record
        finally:
            await records.aclose()
        return Response(orjson.dumps(last), media_type="application/json")

    async def body() -> AsyncIterator[bytes]:
        try:
            yield orjson.dumps(first) + b"\n"
            async for record in records:
                yield orjson.dumps(record) + b"\n"
        except GardenError as exc:
            yield ollama_error_line(exc.message)
        except Exception as exc:
            yield ollama_error_line(unexpected(exc).message)
        finally:
            await records.aclose()

    return StreamingResponse(body(), media_type=NDJSON)


@router.post("/api/pull", openapi_extra=body_schema(TransferRequest))
async def pull(request: Request) -> Response:
    """Download a model from a registry or a Hugging Face GGUF repository."""
    req = await _request(request)
    records = puller(request).pull(req.model or req.name, insecure=bool(req.insecure))
    return await progress_response(records, stream=req.stream is not False)


@router.post("/api/push", openapi_extra=body_schema(TransferRequest))
async def push(request: Request) -> Response:
    """Upload a model to its registry."""
    req = await _request(request)
    records = puller(request).push(req.model or req.name, insecure=bool(req.insecure))
    return await progress_response(records, stream=req.stream is not False)
