"""The one place where errors become responses, per API family.

Ollama: ``{"error": "message"}``. OpenAI: ``{"error": {"message", "type", "param",
"code"}}``. Errors after a stream began are written as the stream's last record by
:mod:`modelgarden.api.streaming`, using :func:`ollama_error_line` and friends.
"""

from __future__ import annotations

import orjson
import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from modelgarden.errors import BadRequest, GardenError

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
    code = getattr(exc, "code", None) or ("model_not_found" if exc.status == 404 else None)
    return {"error": {"message": exc.message, "type": exc.kind, "param": param, "code": code}}


def openai_error(exc: GardenError) -> Response:
    """An OpenAI-shaped error response."""
    return Response(
        orjson.dumps(openai_error_body(exc)),
        status_code=exc.status,
        media_type="application/json",
        headers=_headers(exc),
    )


async def send_error(scope: Scope, receive: Receive, send: Send, exc: GardenError) -> None:
    """Answer a request with an error in its API's shape, before any route runs."""
    response = openai_error(exc) if scope["path"].startswith("/v1/") else ollama_error(exc)
    if exc.status == 401:
        response.headers["www-authenticate"] = "Bearer"
    await response(scope, receive, send)


def unexpected(exc: BaseException) -> GardenError:
    """Wrap a bug as a 500 with a short message; the traceback goes to the log only."""
    log.exception("unhandled error", error=repr(exc))
    return GardenError(f"internal error: {type(exc).__name__}")
