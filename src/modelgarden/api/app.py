"""The ASGI application: routers for each API family, error handlers, lifespan.

``create_app(settings)`` builds everything from validated settings; nothing is read from
module globals, so tests and the Modal deployment build the same app their own way.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from modelgarden import __version__
from modelgarden.api import passthrough, status
from modelgarden.api.errors import ollama_error, openai_error, unexpected
from modelgarden.api.ollama import inference, models, transfer
from modelgarden.api.openai import routes as openai_routes
from modelgarden.api.openapi import install_schemas
from modelgarden.config import Settings
from modelgarden.errors import BadRequest, GardenError, NotFound
from modelgarden.gateway import Gateway


def _render(request: Request, exc: GardenError) -> Response:
    if request.url.path.startswith("/v1/"):
        return openai_error(exc)
    return ollama_error(exc)


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
    return _render(request, BadRequest(f"invalid request: {exc}"))


async def _unexpected(request: Request, exc: Exception) -> Response:
    return _render(request, unexpected(exc))


def create_app(settings: Settings, gateway: Gateway | None = None) -> FastAPI:
    """Build the gateway's ASGI app."""
    gw = gateway or Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        # Everything allocated so far lives as long as the process: keep it out of the
        # collector's way (full collections otherwise dominate tail latency under load).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await gw.close()

    app = FastAPI(
        title="modelgarden",
        version=__version__,
        description="A drop-in Ollama and OpenAI-compatible model gateway.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.gateway = gw
    app.state.settings = settings
    app.add_exception_handler(GardenError, _garden_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(models.router)
    app.include_router(inference.router)
    app.include_router(transfer.router)
    app.include_router(openai_routes.router)
    app.include_router(passthrough.router)
    app.include_router(status.router)
    install_schemas(app)
    return app
