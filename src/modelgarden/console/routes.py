"""``/ui`` (the console's files) and the read-only data routes only the console needs.

- ``GET /garden/models``: installed models with the backend serving each, their details
  and, for the gateway's own models, capabilities and the estimated memory at the default
  context; with the memory this machine has for models.
- ``GET /garden/series?minutes=60``: requests, latency and time to first token (p50/p95)
  and tokens/s per model and minute, from the telemetry's in-memory ring.

Neither calls or wakes a remote backend.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from modelgarden.api.state import app_state
from modelgarden.backends.local_views import capabilities
from modelgarden.config import Settings
from modelgarden.errors import BadRequest, ModelNotFound
from modelgarden.lifecycle.memory import default_need
from modelgarden.recommend import memory_for_models
from modelgarden.resources import machine
from modelgarden.security.auth import key_of
from modelgarden.store.gguf import GGUFError
from modelgarden.store.store import ModelStore
from modelgarden.telemetry.series import WINDOW

#: The console's files (package data).
STATIC = Path(__file__).parent / "static"

router = APIRouter(tags=["garden"])


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _local_facts(store: ModelStore, names: list[str], settings: Settings) -> dict[str, Any]:
    """Capabilities, default context and memory need of local models (file reads: a thread)."""
    facts: dict[str, Any] = {}
    for name in names:
        try:
            model = store.get(name)
        except ModelNotFound:  # deleted meanwhile
            continue
        try:
            info = store.gguf(model)
        except (GGUFError, OSError) as exc:
            facts[name] = {"capabilities": None, "memory": None, "problem": str(exc)}
            continue
        ctx, need = default_need(info, model.size, settings.context_length, settings.num_parallel)
        facts[name] = {
            "capabilities": capabilities(model, info),
            "context_length": ctx,
            "memory": need,
        }
    return facts


def _room(settings: Settings) -> dict[str, Any]:
    here = machine(settings.models_dir, settings.llama_server)
    room = memory_for_models(here)
    if settings.memory_limit is not None:
        room = min(room, settings.memory_limit)
    return {"for_models": room, "ram_total": here.ram_total, "ram_available": here.ram_available}


@router.get("/garden/models")
async def models(request: Request) -> Response:
    """Installed models across backends, with capabilities and estimated memory where known."""
    state = app_state(request)
    gateway, settings = state.gateway, state.settings
    key = key_of(request.scope)
    catalogue = [(b, e) for b, e in await gateway.catalogue() if key is None or key.allows(e.name)]
    local = [entry.name for backend, entry in catalogue if backend is gateway.local]
    facts, room = await asyncio.gather(
        asyncio.to_thread(_local_facts, gateway.store, local, settings),
        asyncio.to_thread(_room, settings),
    )
    rows = []
    for backend, entry in catalogue:
        row = {**entry.model_dump(mode="json"), "backend": backend.name, "kind": backend.kind}
        row.update(facts.get(entry.name) or {"capabilities": None, "memory": None})
        rows.append(row)
    return _json({"models": rows, "default_model": settings.default_model, "memory": room})


@router.get("/garden/series")
async def series(request: Request, minutes: int = WINDOW) -> Response:
    """Per-minute traffic per model over the last ``minutes`` (1 to 60)."""
    if not 1 <= minutes <= WINDOW:
        raise BadRequest(f"minutes: expected 1 to {WINDOW}, got {minutes}", param="minutes")
    telemetry = app_state(request).telemetry
    return _json(telemetry.series.window_since(minutes))


class ConsoleFiles(StaticFiles):
    """The console's files, revalidated on each load so an upgrade shows at once, and never
    shown inside another site's frame (clickjacking: a page that frames the console could
    make a visitor press its delete buttons)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["cache-control"] = "no-cache"
        response.headers["content-security-policy"] = "frame-ancestors 'self'"
        response.headers["x-frame-options"] = "SAMEORIGIN"
        return response


async def _to_console(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=308)


def mount(app: FastAPI) -> None:
    """Add the console's routes and files to the app."""
    app.include_router(router)
    app.add_api_route("/ui", _to_console, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/ui", ConsoleFiles(directory=STATIC, html=True), name="console")
