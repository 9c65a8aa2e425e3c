"""``/ollama/*``: the native API of a configured Ollama backend, passed through unchanged.

Any GET, POST, DELETE (and HEAD, PUT) under the prefix goes to the first backend that can
forward (a :class:`~modelgarden.backends.base.PassThrough`: an ``ollama`` daemon, a ``modal``
GPU class), or to the one named by the path's first segment (``/ollama/<backend>/api/tags``),
with its method, path, query, headers and body; the status, headers and body come back as
the backend sent them, streamed. The backend decides the transport. Hop-by-hop headers are
dropped, the client's ``Authorization`` (and cookies) never reach the upstream, and a path
that would leave the prefix (``..``, also percent-encoded, backslashes, empty segments) is
refused with a 400.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from modelgarden.api.state import app_state
from modelgarden.backends.base import PassThrough
from modelgarden.errors import BadRequest, NotFound
from modelgarden.gateway import Gateway
from modelgarden.upstream_http import HOP_BY_HOP

router = APIRouter(tags=["passthrough"])

PRIVATE = frozenset({"authorization", "cookie", "x-api-key"})


def safe_path(raw: str) -> str:
    """The path below the prefix, refused when any reading of it climbs out."""
    decoded = raw
    for _ in range(3):  # %252e%252e -> %2e%2e -> ..
        decoded = unquote(decoded)
    segments = decoded.split("/")
    if "\\" in decoded or any(s in ("..", ".") for s in segments) or "" in segments[:-1]:
        raise BadRequest("path not allowed under /ollama/")
    return raw


def _backend(gateway: Gateway, path: str) -> tuple[PassThrough, str]:
    first, _, rest = path.partition("/")
    named = gateway.backend(first)
    if isinstance(named, PassThrough) and rest:
        return named, rest
    backend = next((b for b in gateway.backends if isinstance(b, PassThrough)), None)
    if backend is None:
        raise NotFound("no Ollama backend is configured for /ollama/")
    return backend, path


@router.api_route(
    "/ollama/{path:path}", methods=["GET", "POST", "DELETE", "HEAD", "PUT"], include_in_schema=False
)
async def passthrough(request: Request, path: str) -> Response:
    """Forward a request to a backend's native API and stream its answer back."""
    raw_path = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0]
    prefix_len = len("/ollama/")
    safe_path(raw_path[prefix_len:] if raw_path.startswith("/ollama/") else path)
    gateway = app_state(request).gateway
    backend, rest = _backend(gateway, raw_path[prefix_len:] or path)
    query = request.url.query
    headers = {k: v for k, v in request.headers.items() if k not in HOP_BY_HOP and k not in PRIVATE}
    body = await request.body() if request.method not in ("GET", "HEAD") else None

    target = f"/{rest}" + (f"?{query}" if query else "")
    upstream = await backend.forward(request.method, target, headers, body)
    out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
    return _Released(
        StreamingResponse(upstream.body, status_code=upstream.status, headers=out_headers),
        upstream.close,
    )


class _Released(Response):
    """Runs a response, then frees what it held, even if the client left before it began."""

    def __init__(self, inner: Response, release: Callable[[], Awaitable[None]]) -> None:
        self.inner = inner
        self.release = release
        self.status_code = inner.status_code
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.inner(scope, receive, send)
        finally:
            await self.release()
