"""What the dispatcher needs to know of each API family, in tables rather than branches.

For every family (:class:`~modelgarden.backends.base.Api`): its framing (stream end, error
records, error bodies), its native endpoints per kind of request, how a neutral request is
written in it for a backend, how its whole answers and streams are read back, and how the
client's own answers are written: an encoder per (family, kind) for streams and a builder
for whole answers. A new family is new rows here and a module in ``translate/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelgarden.api.errors import is_anthropic
from modelgarden.api.streaming import ANTHROPIC_SSE, NDJSON, RESPONSES_SSE, SSE, Framing
from modelgarden.backends.base import Api
from modelgarden.translate import anthropic as an
from modelgarden.translate import ollama as ot
from modelgarden.translate import openai as oa
from modelgarden.translate import responses as rs
from modelgarden.translate.stream import (
    Decoder,
    Encoder,
    NDJSONDecoder,
    OllamaEncoder,
    OpenAIChatEncoder,
    OpenAICompletionEncoder,
    SSEDecoder,
)
from modelgarden.translate.stream_anthropic import AnthropicDecoder, AnthropicEncoder
from modelgarden.translate.stream_responses import ResponsesDecoder, ResponsesEncoder
from modelgarden.types import Chunk, InferenceRequest

FRAMING: dict[Api, Framing] = {
    Api.OLLAMA: NDJSON,
    Api.OPENAI: SSE,
    Api.ANTHROPIC: ANTHROPIC_SSE,
    Api.RESPONSES: RESPONSES_SSE,
}
#: The media type of each family's streams.
STREAM_MEDIA = {
    Api.OLLAMA: "application/x-ndjson",
    Api.OPENAI: "text/event-stream",
    Api.ANTHROPIC: "text/event-stream",
    Api.RESPONSES: "text/event-stream",
}
#: Each family's endpoint for each kind of request, for native relays (``count``: a token
#: count, which a backend of another family answers by evaluating the prompt).
ENDPOINTS = {
    Api.OLLAMA: {"chat": "chat", "completion": "generate", "embed": "embed"},
    Api.OPENAI: {"chat": "chat/completions", "completion": "completions", "embed": "embeddings"},
    Api.ANTHROPIC: {"chat": "messages", "count": "messages/count_tokens"},
    Api.RESPONSES: {"chat": "responses"},
}
#: A neutral request in a backend's family: its endpoint and body.
REQUEST_OUT: dict[Api, Callable[[InferenceRequest], tuple[str, dict[str, Any]]]] = {
    Api.OLLAMA: ot.request_out,
    Api.OPENAI: oa.request_out,
    Api.ANTHROPIC: an.request_out,
    Api.RESPONSES: rs.request_out,
}
#: A backend's whole (non-streamed) answer as one final chunk.
WHOLE_IN: dict[Api, Callable[[dict[str, Any]], Chunk]] = {
    Api.OLLAMA: ot.chunk_in,
    Api.OPENAI: oa.response_in,
    Api.ANTHROPIC: an.response_in,
    Api.RESPONSES: rs.response_in,
}
#: A backend's stream read as chunks.
DECODERS: dict[Api, Callable[[], Decoder]] = {
    Api.OLLAMA: NDJSONDecoder,
    Api.OPENAI: SSEDecoder,
    Api.ANTHROPIC: AnthropicDecoder,
    Api.RESPONSES: ResponsesDecoder,
}

EncoderFactory = Callable[[str, InferenceRequest], Encoder]
#: The client's stream, written from chunks, per (family, kind of request).
ENCODERS: dict[tuple[Api, str], EncoderFactory] = {
    (Api.OLLAMA, "chat"): lambda model, req: OllamaEncoder(model, "chat"),
    (Api.OLLAMA, "completion"): lambda model, req: OllamaEncoder(model, "generate"),
    (Api.OPENAI, "chat"): lambda model, req: OpenAIChatEncoder(model, req.include_usage),
    (Api.OPENAI, "completion"): lambda m, req: OpenAICompletionEncoder(m, req.include_usage),
    (Api.ANTHROPIC, "chat"): lambda model, req: AnthropicEncoder(model),
    (Api.RESPONSES, "chat"): ResponsesEncoder,
}

WholeBuilder = Callable[[Chunk, str, InferenceRequest], dict[str, Any]]
#: The client's whole answer, built from one final chunk, per (family, kind of request).
WHOLE_OUT: dict[tuple[Api, str], WholeBuilder] = {
    (Api.OLLAMA, "chat"): lambda chunk, model, req: ot.chunk_out(chunk, model, "chat"),
    (Api.OLLAMA, "completion"): lambda chunk, model, req: ot.chunk_out(chunk, model, "generate"),
    (Api.OPENAI, "chat"): lambda chunk, model, req: oa.chat_response_out(
        chunk, model, oa.new_id("chatcmpl"), oa.now()
    ),
    (Api.OPENAI, "completion"): lambda chunk, model, req: oa.completion_response_out(
        chunk, model, oa.new_id("cmpl"), oa.now()
    ),
    (Api.ANTHROPIC, "chat"): lambda chunk, model, req: an.response_out(
        chunk, model, an.new_id("msg")
    ),
    (Api.ANTHROPIC, "count"): lambda chunk, model, req: an.count_out(chunk),
    (Api.RESPONSES, "chat"): lambda chunk, model, req: rs.response_out(
        chunk, model, rs.new_id("resp"), req
    ),
}


def family_of(path: str) -> Api:
    """The API family a request path belongs to."""
    if is_anthropic(path):
        return Api.ANTHROPIC
    if path == "/v1/responses" or path.startswith("/v1/responses/"):
        return Api.RESPONSES
    return Api.OPENAI if path.startswith("/v1/") else Api.OLLAMA
