"""A Python client for modelgarden and any Ollama server: typed answers, typed errors."""

from modelgarden.client._base import resolve_host
from modelgarden.client._sync import Client
from modelgarden.client.errors import (
    BadRequest,
    ClientError,
    ModelNotFound,
    Overloaded,
    RateLimited,
    ResponseError,
    ServerError,
    StreamError,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "BadRequest",
    "Client",
    "ClientError",
    "ModelNotFound",
    "Overloaded",
    "RateLimited",
    "ResponseError",
    "ServerError",
    "StreamError",
    "Unauthorized",
    "Unavailable",
    "resolve_host",
]
