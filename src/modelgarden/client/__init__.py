"""A Python client for modelgarden and any Ollama server, for projects sharing one service.

``Client`` and ``AsyncClient`` have ``ollama.Client``'s methods (plus OpenAI's
``chat_completions``), typed answers and typed errors, failover across base URLs, retries
with backoff, per-endpoint circuit breakers and per-call telemetry. See ``docs/CLIENT.md``.
"""

from modelgarden.client._async import AsyncClient
from modelgarden.client._base import resolve_host, resolve_hosts
from modelgarden.client._build import (
    ChatCompletionFields,
    ChatFields,
    CreateFields,
    EmbedFields,
    GenerateFields,
)
from modelgarden.client._resilience import BreakerState
from modelgarden.client._sync import Client
from modelgarden.client.errors import (
    BadRequest,
    CircuitOpen,
    ClientError,
    InvalidResponse,
    ModelNotFound,
    Overloaded,
    RateLimited,
    RequestTimeout,
    ResponseError,
    ServerError,
    StreamError,
    StreamInterrupted,
    Unauthorized,
    Unavailable,
)
from modelgarden.client.openai_types import ChatCompletion, ChatCompletionChunk
from modelgarden.client.options import BreakerPolicy, ClientOptions, RetryPolicy
from modelgarden.client.streams import AsyncStream, Stream
from modelgarden.client.telemetry import CallStats
from modelgarden.client.types import (
    ChatResponse,
    EmbedResponse,
    GenerateResponse,
    Health,
    ListResponse,
    ProgressResponse,
    PsResponse,
    ShowResponse,
    StatusResponse,
    VersionResponse,
)

__all__ = [
    "AsyncClient",
    "AsyncStream",
    "BadRequest",
    "BreakerPolicy",
    "BreakerState",
    "CallStats",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionFields",
    "ChatFields",
    "ChatResponse",
    "CircuitOpen",
    "Client",
    "ClientError",
    "ClientOptions",
    "CreateFields",
    "EmbedFields",
    "EmbedResponse",
    "GenerateFields",
    "GenerateResponse",
    "Health",
    "InvalidResponse",
    "ListResponse",
    "ModelNotFound",
    "Overloaded",
    "ProgressResponse",
    "PsResponse",
    "RateLimited",
    "RequestTimeout",
    "ResponseError",
    "RetryPolicy",
    "ServerError",
    "ShowResponse",
    "StatusResponse",
    "Stream",
    "StreamError",
    "StreamInterrupted",
    "Unauthorized",
    "Unavailable",
    "VersionResponse",
    "resolve_host",
    "resolve_hosts",
]
