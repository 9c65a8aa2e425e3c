"""The error hierarchy: errors are values until the edge.

Backends, the store and the scheduler raise these; exactly one place per API family
(``api/errors.py``) turns them into the client's wire format. Each class carries the HTTP
status it maps to, so adding an error never means touching the mapping.

::

    GardenError (500)
    ├── BadRequest (400)
    │   ├── InvalidModelName (400)
    │   └── UnsupportedCapability (400)
    ├── Unauthorized (401)
    ├── Forbidden (403)
    ├── NotFound (404)
    │   ├── ModelNotFound (404)
    │   └── BlobNotFound (404)
    ├── Conflict (409)
    ├── PayloadTooLarge (413)
    ├── RateLimited (429)
    ├── ClientClosed (499)
    ├── RunnerFailed (500)
    ├── InsufficientMemory (500)
    ├── BackendUnavailable (502)
    ├── Overloaded (503)
    ├── DatabaseUnavailable (503)
    ├── UpstreamTimeout (504)
    └── StorageFull (507)
"""

from __future__ import annotations

from typing import Any


def message_of(error: Any) -> str:
    """The message of an ``error`` member in any family's shape: ``{"message": ...}`` (OpenAI,
    Anthropic) or the text itself (Ollama)."""
    return str(error.get("message", error) if isinstance(error, dict) else error)


class GardenError(Exception):
    """Base of every error the gateway reports to a client; owns its status and message."""

    status: int = 500
    #: OpenAI-style error ``type`` for this class.
    kind: str = "server_error"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


class BadRequest(GardenError):
    """The request is malformed or asks for something the model cannot do."""

    status = 400
    kind = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidModelName(BadRequest):
    """A model name that cannot be parsed or would escape the store."""


class UnsupportedCapability(BadRequest):
    """The model lacks a capability the request needs (tools, insert, vision, ...)."""


class Unauthorized(GardenError):
    """No credentials, or credentials that are not valid."""

    status = 401
    kind = "authentication_error"


class Forbidden(GardenError):
    """Valid credentials without the right to do this."""

    status = 403
    kind = "permission_error"


class NotFound(GardenError):
    """Something named in the request does not exist."""

    status = 404
    kind = "not_found_error"


class ModelNotFound(NotFound):
    """The model is not known to any backend."""

    def __init__(self, model: str, message: str | None = None) -> None:
        super().__init__(message or f"model '{model}' not found")
        self.model = model


class BlobNotFound(NotFound):
    """A blob digest that the store does not hold."""


class Conflict(GardenError):
    """The request conflicts with the current state."""

    status = 409
    kind = "conflict_error"


class PayloadTooLarge(GardenError):
    """The request body is larger than allowed."""

    status = 413
    kind = "invalid_request_error"


class RateLimited(GardenError):
    """Too many requests or tokens for this key; ``retry_after`` says when to come back."""

    status = 429
    kind = "rate_limit_error"


class ClientClosed(GardenError):
    """The client went away before the answer was ready (Ollama's 499)."""

    status = 499
    kind = "client_closed"


class RunnerFailed(GardenError):
    """A runner process failed to start or died while answering."""

    status = 500
    kind = "server_error"


class InsufficientMemory(GardenError):
    """Loading the model would not fit in the memory this machine has free."""

    status = 500
    kind = "server_error"


class BackendUnavailable(GardenError):
    """The backend cannot be reached or answered with a failure."""

    status = 502
    kind = "server_error"


class Overloaded(GardenError):
    """The queue is full; the client should try again later."""

    status = 503
    kind = "overloaded_error"


class DatabaseUnavailable(GardenError):
    """The gateway's own database (usage records) cannot be used now."""

    status = 503
    kind = "server_error"


class UpstreamTimeout(GardenError):
    """The backend did not answer in time."""

    status = 504
    kind = "timeout_error"


class StorageFull(GardenError):
    """The disk under the model store is full (what was written so far is kept)."""

    status = 507
    kind = "server_error"


SERVER_BUSY = "server busy, please try again.  maximum pending requests exceeded"
