"""``GET /garden/backends``: each backend's replicas, breaker states and load, at a glance."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from modelgarden.api.state import app_state

router = APIRouter(tags=["garden"])


@router.get("/garden/backends")
async def backends(request: Request) -> Response:
    """Backends in routing order, with replica health and load."""
    gateway = app_state(request).gateway
    body = {"backends": gateway.describe()}
    return Response(orjson.dumps(body), media_type="application/json")
