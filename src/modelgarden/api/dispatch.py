"""Sending a request to the backend that serves its model, in whichever family it speaks.

When the backend speaks the client's family, the request goes as the client wrote it (the
model renamed) and the answer comes back as bytes: the fast path. Otherwise the request is
translated through the neutral form into the first family the backend speaks (in the order
of :data:`~modelgarden.backends.base.PREFERRED`), and the answer's records are translated
back as they stream. Either way the client gets its own family's framing and error
records. The per-family pieces are tables in :mod:`modelgarden.api.families`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from starlette.requests import Request

from modelgarden.api.families import (
    DECODERS,
    ENCODERS,
    ENDPOINTS,
    FRAMING,
    REQUEST_OUT,
    STREAM_MEDIA,
    WHOLE_IN,
    WHOLE_OUT,
)
from modelgarden.api.state import app_state
from modelgarden.api.streaming import ClientWatch, Framing, RelayResponse
from modelgarden.backends.base import PREFERRED, Api, BackendRequest, BackendResponse
from modelgarden.errors import (
    BackendUnavailable,
    GardenError,
    Overloaded,
    UpstreamTimeout,
    message_of,
)
from modelgarden.gateway import Route
from modelgarden.security.auth import check_model, key_of
from modelgarden.telemetry import Meter
from modelgarden.translate import openai as oa
from modelgarden.translate.stream import translate
from modelgarden.types import InferenceRequest


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
    #: Client headers of the family passed on to a native upstream (never credentials).
    headers: dict[str, str] = field(default_factory=dict)
    #: Drop ``think`` for a model that cannot think instead of refusing the request.
    relax_think: bool = False


#: Failures after which the next route (a fallback) is tried: the backend, not the request.
FALL_THROUGH = (BackendUnavailable, Overloaded, UpstreamTimeout)


async def dispatch(request: Request, incoming: Incoming) -> RelayResponse:
    """Route, send (translating if need be) and wrap the answer for the client.

    Routes are tried in order (the model's backend, then its fallbacks) while a backend is
    down, open or full; the last failure is the one reported. The request's meter learns
    the route and the time spent waiting on backends; an error raised from here is
    accounted for where it is rendered (``api/app.py``).
    """
    state = app_state(request)
    gateway, telemetry = state.gateway, state.telemetry
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
    watch = ClientWatch(request.receive, state.drain, request.scope)
    framing = FRAMING[incoming.api]
    try:
        for position, route in enumerate(routes):
            meter.backend, meter.model = route.backend.name, route.model
            try:
                upstream, framing = await _send(route, incoming, watch, meter)
            except FALL_THROUGH:
                if position == len(routes) - 1:
                    raise
                continue
            break
    except BaseException:
        watch.stop()
        raise
    return RelayResponse(
        upstream, stream=incoming.stream, watch=watch, framing=framing, meter=meter
    )


def _backend_request(
    route: Route, incoming: Incoming, meter: Meter
) -> tuple[BackendRequest, InferenceRequest | None]:
    """The request in the backend's family (and its neutral form when translated)."""
    backend = route.backend
    if incoming.api in backend.apis:
        body = incoming.body
        if body.get("model") != route.model:
            body = {**body, "model": route.model}
        target, neutral = incoming.api, None
        endpoint = ENDPOINTS[target][incoming.kind]
        headers = incoming.headers
    else:
        target = next(api for api in PREFERRED if api in backend.apis)
        neutral = incoming.neutral()
        neutral.model = route.model
        translated = neutral
        if incoming.kind == "count":  # counted by evaluating the prompt: one token answered
            sampling = replace(neutral.sampling, max_tokens=1)
            translated = replace(neutral, sampling=sampling, stream=False)
        endpoint, body = REQUEST_OUT[target](translated)
        headers = {}
    breq = BackendRequest(
        api=target,
        endpoint=endpoint,
        model=route.model,
        body=body,
        stream=incoming.stream,
        start_ns=time.time_ns(),
        keep_alive=incoming.keep_alive,
        trace=meter.trace,
        headers=headers,
        relax_think=incoming.relax_think,
    )
    return breq, neutral


async def _send(
    route: Route, incoming: Incoming, watch: ClientWatch, meter: Meter
) -> tuple[BackendResponse, Framing]:
    breq, neutral = _backend_request(route, incoming, meter)
    sent = time.perf_counter_ns()
    try:
        upstream = await watch.guard(route.backend.send(breq))
    finally:
        meter.backend_ns += time.perf_counter_ns() - sent
    framing = FRAMING[incoming.api]
    if neutral is None:
        return upstream, framing
    return _translated(upstream, incoming, neutral, breq.api, meter, framing)


def _translated(
    upstream: BackendResponse,
    incoming: Incoming,
    req: InferenceRequest,
    source: Api,
    meter: Meter,
    framing: Framing,
) -> tuple[BackendResponse, Framing]:
    """The upstream answer re-encoded in the client's family, and the framing of its
    failures (a stateful encoder writes its own last error record)."""
    body: AsyncIterator[bytes]
    if incoming.stream and incoming.kind not in ("embed", "count"):
        encoder = ENCODERS[incoming.api, incoming.kind](incoming.model, req)
        meter.counted = encoder  # its final usage, whether or not the client asked for it
        fail = getattr(encoder, "fail", None)
        if fail is not None:
            framing = replace(framing, error_record=fail)
        body = translate(upstream.body, DECODERS[source](), encoder)
        media = STREAM_MEDIA[incoming.api]
    else:
        body = _whole(upstream.body, incoming, req, source)
        media = "application/json"
    response = BackendResponse(upstream.status, media, body, incoming.api, close=upstream.close)
    return response, framing


async def _whole(
    body: AsyncIterator[bytes], incoming: Incoming, req: InferenceRequest, source: Api
) -> AsyncIterator[bytes]:
    raw = b"".join([part async for part in body])
    data = orjson.loads(raw) if raw else {}
    # A failure's body has an error; a Responses answer carries "error": null when it has none.
    if isinstance(data, dict) and (err := data.get("error")):
        raise GardenError(message_of(err))
    yield orjson.dumps(_convert_whole(data, incoming, req, source))


def _convert_whole(
    data: dict[str, Any], incoming: Incoming, req: InferenceRequest, source: Api
) -> dict[str, Any]:
    model = incoming.model
    if incoming.kind == "embed":
        return _convert_embedding(data, req, source, model)
    chunk = WHOLE_IN[source](data)
    return WHOLE_OUT[incoming.api, incoming.kind](chunk, model, req)


def _convert_embedding(
    data: dict[str, Any], req: InferenceRequest, source: Api, model: str
) -> dict[str, Any]:
    if source is Api.OLLAMA:  # Ollama embed → OpenAI embeddings
        fmt = str(req.extra.get("encoding_format", "float"))
        count = int(data.get("prompt_eval_count") or 0)
        return oa.embedding_response_out(data.get("embeddings") or [], model, count, fmt)
    vectors = [
        d.get("embedding") for d in sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
    ]
    usage = data.get("usage") or {}
    return {
        "model": model,
        "embeddings": vectors,
        "prompt_eval_count": usage.get("prompt_tokens", 0),
    }
