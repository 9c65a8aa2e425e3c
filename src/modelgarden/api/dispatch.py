"""Sending a request to the backend that serves its model, in whichever family it speaks.

When the backend speaks the client's family, the request goes as the client wrote it (the
model renamed) and the answer comes back as bytes: the fast path. Otherwise the request is
translated through the neutral form, and the answer's records are translated back as they
stream. Either way the client gets its own family's framing and error records.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from modelgarden.api.streaming import NDJSON, SSE, ClientWatch, RelayResponse
from modelgarden.backends.base import Api, BackendRequest, BackendResponse
from modelgarden.errors import BackendUnavailable, GardenError, Overloaded, UpstreamTimeout
from modelgarden.gateway import Gateway, Route
from modelgarden.security.auth import check_model, key_of
from modelgarden.telemetry import Meter, Telemetry
from modelgarden.translate import ollama as ot
from modelgarden.translate import openai as oa
from modelgarden.translate.stream import (
    NDJSONDecoder,
    OllamaEncoder,
    OpenAIChatEncoder,
    OpenAICompletionEncoder,
    SSEDecoder,
    translate,
)
from modelgarden.types import InferenceRequest

FRAMING = {Api.OLLAMA: NDJSON, Api.OPENAI: SSE}
#: Each family's endpoint for each kind of request.
ENDPOINTS = {
    Api.OLLAMA: {"chat": "chat", "completion": "generate", "embed": "embed"},
    Api.OPENAI: {"chat": "chat/completions", "completion": "completions", "embed": "embeddings"},
}


@dataclass
class Incoming:
    """A parsed client request, before routing."""

    api: Api
    kind: str
    model: str
    body: dict[str, Any]
    stream: bool
    keep_alive: float | None
    #: Builds the neutral form; called only when the request must be translated.
    neutral: Callable[[], InferenceRequest]


#: Failures after which the next route (a fallback) is tried: the backend, not the request.
FALL_THROUGH = (BackendUnavailable, Overloaded, UpstreamTimeout)


async def dispatch(request: Request, incoming: Incoming) -> RelayResponse:
    """Route, send (translating if need be) and wrap the answer for the client.

    Routes are tried in order (the model's backend, then its fallbacks) while a backend is
    down, open or full; the last failure is the one reported. The request's meter learns
    the route and the time spent waiting on backends; an error raised from here is
    accounted for where it is rendered (``api/app.py``).
    """
    gateway: Gateway = request.app.state.gateway
    telemetry: Telemetry = request.app.state.telemetry
    meter = telemetry.meter(request.scope)
    meter.api, meter.endpoint, meter.stream = incoming.api, request.scope["path"], incoming.stream
    meter.model = incoming.model
    if meter.trace is not None:
        meter.trace.request_model = incoming.model
    key = key_of(request.scope)
    if key is not None:
        meter.key_id = key.id
        check_model(request.scope, incoming.model)
    if telemetry.log_prompts:
        body = incoming.body
        meter.prompt = body.get("messages") or body.get("prompt") or body.get("input")
    routes = await gateway.routes(incoming.model)
    watch = ClientWatch(request.receive, request.app.state.drain, request.scope)
    try:
        for position, route in enumerate(routes):
            meter.backend, meter.model = route.backend.name, route.model
            try:
                upstream = await _send(route, incoming, watch, meter)
            except FALL_THROUGH:
                if position == len(routes) - 1:
                    raise
                continue
            break
    except BaseException:
        watch.stop()
        raise
    return RelayResponse(
        upstream, stream=incoming.stream, watch=watch, framing=FRAMING[incoming.api], meter=meter
    )


async def _send(
    route: Route, incoming: Incoming, watch: ClientWatch, meter: Meter
) -> BackendResponse:
    backend = route.backend
    native = incoming.api in backend.apis
    target = incoming.api if native else sorted(backend.apis)[0]
    neutral: InferenceRequest | None = None
    if native:
        body = incoming.body
        if body.get("model") != route.model:
            body = {**body, "model": route.model}
    else:
        neutral = incoming.neutral()
        neutral.model = route.model
        _, body = (ot.request_out if target is Api.OLLAMA else oa.request_out)(neutral)
    breq = BackendRequest(
        api=target,
        endpoint=ENDPOINTS[target][incoming.kind],
        model=route.model,
        body=body,
        stream=incoming.stream,
        start_ns=time.time_ns(),
        keep_alive=incoming.keep_alive,
        trace=meter.trace,
    )
    sent = time.perf_counter_ns()
    try:
        upstream = await watch.guard(backend.send(breq))
    finally:
        meter.backend_ns += time.perf_counter_ns() - sent
    if neutral is None:
        return upstream
    return _translated(upstream, incoming, neutral, target, meter)


def _translated(
    upstream: BackendResponse, incoming: Incoming, req: InferenceRequest, source: Api, meter: Meter
) -> BackendResponse:
    """The upstream answer re-encoded in the client's family."""
    model = incoming.model
    if incoming.stream and incoming.kind != "embed":
        decoder = NDJSONDecoder() if source is Api.OLLAMA else SSEDecoder()
        encoder: OllamaEncoder | OpenAIChatEncoder | OpenAICompletionEncoder
        if incoming.api is Api.OLLAMA:
            encoder = OllamaEncoder(model, "chat" if incoming.kind == "chat" else "generate")
            media = "application/x-ndjson"
        else:
            cls = OpenAIChatEncoder if incoming.kind == "chat" else OpenAICompletionEncoder
            encoder = cls(model, req.include_usage)
            media = "text/event-stream"
            meter.counted = encoder  # its final usage, whether or not the client asked for it
        body = translate(upstream.body, decoder, encoder)
    else:
        body = _whole(upstream.body, incoming, req, source)
        media = "application/json"
    return BackendResponse(upstream.status, media, body, incoming.api, close=upstream.close)


async def _whole(
    body: AsyncIterator[bytes], incoming: Incoming, req: InferenceRequest, source: Api
) -> AsyncIterator[bytes]:
    raw = b"".join([part async for part in body])
    data = orjson.loads(raw) if raw else {}
    if "error" in data:
        err = data["error"]
        message = str(err.get("message", err) if isinstance(err, dict) else err)
        raise GardenError(message)
    yield orjson.dumps(_convert_whole(data, incoming, req, source))


def _convert_whole(
    data: dict[str, Any], incoming: Incoming, req: InferenceRequest, source: Api
) -> dict[str, Any]:
    model = incoming.model
    if incoming.kind == "embed":
        if source is Api.OLLAMA:  # Ollama embed → OpenAI embeddings
            fmt = str(req.extra.get("encoding_format", "float"))
            count = int(data.get("prompt_eval_count") or 0)
            return oa.embedding_response_out(data.get("embeddings") or [], model, count, fmt)
        vectors = [
            d.get("embedding")
            for d in sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
        ]
        usage = data.get("usage") or {}
        return {
            "model": model,
            "embeddings": vectors,
            "prompt_eval_count": usage.get("prompt_tokens", 0),
        }
    chunk = ot.chunk_in(data) if source is Api.OLLAMA else oa.response_in(data)
    if incoming.api is Api.OLLAMA:
        return ot.chunk_out(chunk, model, "chat" if incoming.kind == "chat" else "generate")
    cid_prefix = "chatcmpl" if incoming.kind == "chat" else "cmpl"
    build = oa.chat_response_out if incoming.kind == "chat" else oa.completion_response_out
    return build(chunk, model, oa.new_id(cid_prefix), oa.now())
