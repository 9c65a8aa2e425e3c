"""``GET /garden/backends``: each backend's replicas, breaker states and load, at a glance;
``GET /health``: the gateway answers (it asks no backend, so it never wakes a GPU)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from modelgarden.backends.modal import ModalBackend
from modelgarden.backends.remote import RemoteBackend
from modelgarden.gateway import Gateway

router = APIRouter(tags=["garden"])


def describe(backend: Any) -> dict[str, Any]:
    """One backend's state (never its keys or headers)."""
    out: dict[str, Any] = {"name": backend.name, "kind": backend.kind, "apis": sorted(backend.apis)}
    if isinstance(backend, RemoteBackend):
        out["replicas"] = [
            {
                "url": r.url,
                "breaker": str(r.breaker.state),
                "healthy": r.healthy,
                "consecutive_failures": r.breaker.failures,
                "outstanding": r.outstanding,
            }
            for r in backend.replicas
        ]
        out["active"], out["waiting"] = backend.limiter.active, backend.limiter.waiting
        if isinstance(backend, ModalBackend):
            out["lifecycle"] = backend.describe()
    else:
        out["loaded"] = len(backend.scheduler.loaded())
        out["waiting"] = backend.scheduler.pending
    return out


@router.get("/garden/backends")
async def backends(request: Request) -> Response:
    """Backends in routing order, with replica health and load."""
    gateway: Gateway = request.app.state.gateway
    body = {"backends": [describe(b) for b in gateway.backends]}
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/health")
async def health() -> Response:
    """The gateway is up; no backend is asked."""
    return Response(b'{"status":"ok"}', media_type="application/json")
