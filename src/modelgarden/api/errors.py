"""The one place where errors become responses, per API family.

Ollama: ``{"error": "message"}``. OpenAI (chat, completions, embeddings, Responses):
``{"error": {"message", "type", "param", "code"}}``. Anthropic (``/v1/messages``):
``{"type": "error", "error": {"type", "message"}}``, its type chosen by status, and a full
queue answered with Anthropic's 529 ``overloaded_error``. Errors after a stream began are
written as the stream's last record by :mod:`modelgarden.api.streaming`, using
:func:`ollama_error_line` and friends.
"""

from __future__ import annotations

import orjson
import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from modelgarden.errors import BadRequest, GardenError, ModelNotFound, Overloaded
from modelgarden.translate.stream_anthropic import error_body as anthropic_body

log = structlog.get_logger(__name__)


def _headers(exc: GardenError) -> dict[str, str]:
    if exc.retry_after is not None:
        return {"retry-after": str(max(1, round(exc.retry_after)))}
    return {}


def ollama_error(exc: GardenError) -> Response:
    """An Ollama-shaped error response."""
    return Response(
        orjson.dumps({"error": exc.message}),
        status_code=exc.status,
        media_type="application/json",
        headers=_headers(exc),
    )


def ollama_error_line(message: str) -> bytes:
    """The final NDJSON line of a stream that failed after it began."""
    return orjson.dumps({"error": message}) + b"\n"


def openai_error_body(exc: GardenError) -> dict[str, object]:
    """The body of an OpenAI-shaped error."""
    param = exc.param if isinstance(exc, BadRequest) else None
    code = getattr(exc, "code", None)
    if code is None and isinstance(exc, ModelNotFound):  # not a 404 of a route
        code = "model_not_found"
    return {"error": {"message": exc.message, "type": exc.kind, "param": param, "code": code}}


def openai_error(exc: GardenError) -> Response:
    """An OpenAI-shaped error response."""
    return Response(
        orjson.dumps(openai_error_body(exc)),
        status_code=exc.status,
        media_type="application/json",
        headers=_headers(exc),
    )


#: Anthropic's status for a full queue (its ``overloaded_error``).
ANTHROPIC_OVERLOADED = 529


def anthropic_status(exc: GardenError) -> int:
    """The status of an error on Anthropic's API (529 where the gateway is overloaded)."""
    return ANTHROPIC_OVERLOADED if isinstance(exc, Overloaded) else exc.status


def anthropic_error_body(exc: GardenError) -> dict[str, object]:
    """The body of an Anthropic-shaped error."""
    return anthropic_body(anthropic_status(exc), exc.message)


def anthropic_error(exc: GardenError) -> Response:
    """An Anthropic-shaped error response."""
    return Response(
        orjson.dumps(anthropic_error_body(exc)),
        status_code=anthropic_status(exc),
        media_type="application/json",
        headers=_headers(exc),
    )


def is_anthropic(path: str) -> bool:
    """Whether a path belongs to Anthropic's Messages API."""
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def error_response(path: str, exc: GardenError) -> Response:
    """An error in the shape of the API family that ``path`` belongs to."""
    if is_anthropic(path):
        return anthropic_error(exc)
    return openai_error(exc) if path.startswith("/v1/") else ollama_error(exc)


async def send_error(scope: Scope, receive: Receive, send: Send, exc: GardenError) -> None:
    """Answer a request with an error in its API's shape, before any route runs."""
    response = error_response(scope["path"], exc)
    if exc.status == 401:
        response.headers["www-authenticate"] = "Bearer"
    await response(scope, receive, send)


def unexpected(exc: BaseException) -> GardenError:
    """Wrap a bug as a 500 with a short message; the traceback goes to the log only."""
    log.exception("unhandled error", error=repr(exc))
    return GardenError(f"internal error: {type(exc).__name__}")
