"""The ASGI application: routers for each API family, error handlers, lifespan.

``create_app(settings)`` builds everything from validated settings; nothing is read from
module globals, so tests and the Modal deployment build the same app their own way.
"""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from modelgarden import __version__, console
from modelgarden.api import deploy, observe, passthrough, status
from modelgarden.api import keys as key_routes
from modelgarden.api.anthropic import routes as anthropic_routes
from modelgarden.api.body import describe_first
from modelgarden.api.errors import error_response, send_error, unexpected
from modelgarden.api.families import family_of
from modelgarden.api.guard import Guard, is_loopback_bind
from modelgarden.api.ollama import inference, models, transfer
from modelgarden.api.openai import routes as openai_routes
from modelgarden.api.openapi import install_schemas
from modelgarden.api.state import (
    STATE_KEY,
    AppState,
    Forward,
    ForwardToPrimary,
    ProcessRole,
    app_state,
    replay,
)
from modelgarden.api.streaming import Drain
from modelgarden.config import Settings
from modelgarden.errors import BadRequest, GardenError, NotFound
from modelgarden.gateway import Gateway
from modelgarden.memory_release import MemoryRelease
from modelgarden.security.auth import Auth
from modelgarden.security.keys import KeyRing
from modelgarden.security.shared import SharedLimits, SharedLimitsCollector
from modelgarden.telemetry import Telemetry
from modelgarden.telemetry.service import METER_KEY, START_KEY
from modelgarden.telemetry.tracing import Tracing

#: Seconds beyond the grace period that stopping workers get before they are killed.
WORKER_STOP_SLACK = 10.0


def _render(request: Request, exc: GardenError) -> Response:
    path = request.scope["path"]
    response = error_response(path, exc)
    scope = request.scope
    if METER_KEY in scope or START_KEY in scope:  # an inference request: account for it
        meter = app_state(request).telemetry.meter(scope)
        if not meter.api:  # refused before dispatch (a bad body)
            meter.api, meter.endpoint = family_of(path), path
        response.raw_headers.extend(meter.headers())
        meter.finish(exc.status, error=exc.message)
    return response


async def _garden_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GardenError)
    return _render(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err: GardenError = NotFound(f"{request.method} {request.url.path} not found")
    elif exc.status_code == 405:
        err = GardenError(f"method {request.method} not allowed on {request.url.path}")
        err.status = 405
    else:
        err = GardenError(str(exc.detail))
        err.status = exc.status_code
    return _render(request, err)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    message, param = describe_first(exc.errors())
    return _render(request, BadRequest(message, param=param))


async def _unexpected(request: Request, exc: Exception) -> Response:
    return _render(request, unexpected(exc))


Endpoint = Callable[[Request], Awaitable[Response]]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
#: Routes a relay worker answers itself although they are not hot: liveness checks, which
#: say whether the process that took the connection is up.
LIVENESS_ROUTES = frozenset({"/", "/api/version", "/health"})


class FastPath:
    """The ASGI app the server runs: the hot inference routes go straight to their endpoint
    functions, everything else (and the lifespan) to the full FastAPI app.

    The same endpoint functions serve both; FastAPI still documents the hot routes in
    ``/openapi.json``. A hot request skips the framework's per-request machinery (router
    matching, middleware and exception-handler layers, each a coroutine every resumption
    passes through): the endpoint is awaited here and its errors rendered here, in the
    same shapes as the full app's handlers.
    """

    def __init__(
        self,
        full: FastAPI,
        hot: dict[str, Endpoint],
        state: AppState,
    ) -> None:
        self.full = full
        self.hot = hot
        #: The application state (``gateway``, ``settings``, ``telemetry``, ...).
        self.state = state
        settings = state.settings
        #: In a relay worker: where every request it does not answer itself goes.
        self.forward: Forward | None = state.role.forward if state.role is not None else None
        exposed = not is_loopback_bind(settings.bind[0]) and not settings.insecure
        self.guard = Guard(
            Auth(self._route, state.keys, send_error, exposed=exposed),
            bind_host=settings.bind[0],
            origins=settings.origin_list,
            max_body=settings.max_body_size,
        )

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document."""
        return self.full.openapi()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.forward is not None and scope["type"] == "http" and not self._own(scope):
            await self.forward(scope, receive, send)  # the primary applies every rule itself
            return
        await self.guard(scope, receive, send)

    def _own(self, scope: Scope) -> bool:
        """Whether a relay worker answers this request itself (hot inference, liveness)."""
        path = scope["path"]
        return path in LIVENESS_ROUTES or (path in self.hot and scope["method"] == "POST")

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.hot.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST":
            await self.full(scope, receive, send)
            return
        scope[START_KEY] = time.perf_counter_ns()  # the request's meter starts here
        scope["app"] = self.full
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except ForwardToPrimary:  # a relay worker's request for the primary's runners
            assert self.forward is not None
            body = await request.body()
            await self.forward(scope, replay(body, receive), send, checked=True)
            return
        except GardenError as exc:
            response = _render(request, exc)
        except Exception as exc:  # a bug: a 500 in the API's shape, the traceback logged
            response = _render(request, unexpected(exc))
        await response(scope, receive, send)


HOT_ROUTES: dict[str, Endpoint] = {
    "/api/chat": inference.chat,
    "/api/generate": inference.generate,
    "/api/embed": inference.embed,
    "/v1/chat/completions": openai_routes.chat_completions,
    "/v1/completions": openai_routes.completions,
    "/v1/embeddings": openai_routes.embeddings,
    "/v1/responses": openai_routes.responses,
    "/v1/messages": anthropic_routes.messages,
    "/v1/messages/count_tokens": anthropic_routes.count_tokens,
}


def _lifespan(state: AppState, shared: SharedLimits | None) -> Lifespan:
    """The app's lifespan: start what it holds; on the way out stop it all, the process's
    role first, so that a relay worker's last records are accounted for here."""
    gw, telemetry, keys, role = state.gateway, state.telemetry, state.keys, state.role

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        await telemetry.start()
        await keys.attach(telemetry)
        if shared is not None:
            await shared.start()
        if role is not None:
            await role.start(telemetry)
        # Everything allocated so far lives as long as the process: keep it out of the
        # collector's way (full collections otherwise dominate tail latency under load).
        gc.collect()
        gc.freeze()
        release = MemoryRelease(state.drain.watches, telemetry.metrics.registry).start()
        telemetry.hooks.append(release.served)
        if role is not None:
            role.serving(release)
        try:
            yield
        finally:
            if role is not None:
                await role.stop(state.settings.shutdown_grace + WORKER_STOP_SLACK)
            await gw.close()
            await keys.close()
            if shared is not None:
                await shared.close()
            await telemetry.close()
            await release.close()

    return lifespan


def create_app(
    settings: Settings,
    gateway: Gateway | None = None,
    role: ProcessRole | None = None,
    tracing: Tracing | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FastPath:
    """Build the gateway's ASGI app.

    ``role``: this process's part when the gateway runs as several (``garden serve
    --workers N``: the primary's relay workers, or a relay worker's link to its primary;
    see :mod:`modelgarden.workers`), started and stopped with the app. ``tracing``: where
    spans go; by default as the ``OTEL_*`` variables say (off unless an OTLP endpoint is set).
    ``clock``: what the per-key limits read the time from (a test's fake clock).
    """
    gw = gateway or Gateway(settings)
    telemetry = Telemetry(settings, gw.describe, tracing or Tracing.from_environment())
    shared = (
        SharedLimits(settings.redis_url, lease_ttl=settings.shared_lease_ttl)
        if (settings.redis_url)
        else None
    )
    keys = KeyRing(shared=shared, clock=clock)
    if shared is not None:
        telemetry.metrics.registry.register(SharedLimitsCollector(shared))
    telemetry.hooks.append(keys.spend_record)
    state = AppState(settings, gw, telemetry, keys, Drain(), role)

    app = FastAPI(
        title="modelgarden",
        version=__version__,
        description="A drop-in Ollama, OpenAI-compatible and Anthropic Messages model gateway.",
        lifespan=_lifespan(state, shared),
        docs_url="/docs",
        redoc_url=None,
    )
    setattr(app.state, STATE_KEY, state)
    app.add_exception_handler(GardenError, _garden_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    for router in ROUTERS:
        app.include_router(router)
    console.mount(app)
    install_schemas(app)
    return FastPath(app, HOT_ROUTES, state)


ROUTERS = (
    models.router,
    inference.router,
    transfer.router,
    openai_routes.router,
    anthropic_routes.router,
    passthrough.router,
    status.router,
    observe.router,
    deploy.router,
    key_routes.router,
)
