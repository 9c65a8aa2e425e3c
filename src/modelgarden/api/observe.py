"""Cheap routes for operators: ``/health``, ``/ready``, ``/metrics`` and ``/garden/usage``.

None of them calls or wakes a backend: ``/health`` only says the gateway answers,
``/ready`` reads what the gateway already knows (the model store on disk, the usage
database, each backend's breakers and queues; with keys on, only an admin key sees more
than ``ready``), ``/metrics`` is the Prometheus registry.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from modelgarden.api.state import app_state
from modelgarden.db import DatabaseError
from modelgarden.errors import BadRequest, DatabaseUnavailable
from modelgarden.security.auth import secret_of
from modelgarden.telemetry.metrics import CONTENT_TYPE
from modelgarden.telemetry.usage import GROUPS, parse_since, summary

router = APIRouter(tags=["garden"])


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


@router.api_route("/health", methods=["GET", "HEAD"])
async def health() -> Response:
    """The gateway process is up and answering (nothing else is checked)."""
    return _json({"status": "ok"})


def _store_readable(models: Path) -> str | None:
    """Why the model store cannot be read, or ``None`` when it can."""
    if not models.is_dir():
        return f"model store {models} does not exist"
    if not os.access(models, os.R_OK | os.X_OK):
        return f"model store {models} is not readable"
    try:
        next(os.scandir(models), None)
    except OSError as exc:
        return f"model store {models} is not readable: {exc.strerror}"
    return None


@router.get("/ready")
async def ready(request: Request) -> Response:
    """Whether the gateway can serve: settings loaded, model store readable, usage database
    writable; each backend's state as last seen. 503 when the store or database is not."""
    telemetry = app_state(request).telemetry
    models = app_state(request).settings.models_dir
    store_error = await asyncio.to_thread(_store_readable, models)
    usage = telemetry.usage_state()
    ok = store_error is None and usage["ok"]
    if not _insider(request):  # with keys on, paths and upstreams are for admins only
        return _json({"status": "ready" if ok else "not ready"}, 200 if ok else 503)
    body = {
        "status": "ready" if ok else "not ready",
        "config": {"ok": True},
        "store": {"ok": store_error is None, "path": str(models), "error": store_error},
        "database": {
            "ok": usage["ok"],
            "url": usage["database"],
            "error": usage["error"],
            "queued": usage["queued"],
        },
        "backends": telemetry.backends(),
    }
    return _json(body, 200 if ok else 503)


def _insider(request: Request) -> bool:
    """Whether the caller may see the gateway's insides: keys are off, or it sent an
    admin key (``/ready`` is public: load balancers probe it without one)."""
    keys = app_state(request).keys
    if not keys.enabled:
        return True
    secret = secret_of(request.scope["headers"])
    key = keys.find(secret) if secret else None
    return key is not None and key.usable and key.scope == "admin"


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    telemetry = app_state(request).telemetry
    return Response(telemetry.metrics.exposition(), media_type=CONTENT_TYPE)


@router.get("/garden/usage")
async def usage(
    request: Request, since: str = "30d", until: str | None = None, by: str = "day,model,key"
) -> Response:
    """Requests, errors and tokens per group (``by``: day, model, key, backend, api) from
    the usage database, including records still queued in this gateway."""
    telemetry = app_state(request).telemetry
    groups = [g.strip() for g in by.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or len(set(groups)) != len(groups):
        raise BadRequest(f"by: expected names from {', '.join(GROUPS)}, got {by!r}", param="by")
    now = time.time()
    try:
        start = parse_since(since, now)
        end = parse_since(until, now) if until else None
    except ValueError as exc:
        raise BadRequest(str(exc), param="since") from None
    if telemetry.db is None:
        raise DatabaseUnavailable(f"usage database unavailable: {telemetry.db_error}")
    await telemetry.usage.flush()
    try:
        rows = await summary(telemetry.db, start, groups, end)
    except DatabaseError as exc:
        raise DatabaseUnavailable(str(exc)) from None
    return _json({"since": start, "until": end, "by": groups, "rows": rows})
