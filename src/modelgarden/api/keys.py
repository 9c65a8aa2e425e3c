"""Key management over HTTP (admin scope): ``GET/POST /garden/keys``, ``DELETE /garden/keys/{ref}``.

``garden keys`` uses these routes. While no key exists the gateway is open (and listens on
loopback only, unless told ``--insecure``), so the first key is created by whoever can
reach it there; from then on, managing keys takes an admin key (or, locked out, the
database itself: ``garden keys create --local`` on the gateway's machine).
"""

from __future__ import annotations

from typing import Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from modelgarden.api.body import parse
from modelgarden.api.openapi import body_schema
from modelgarden.api.state import app_state
from modelgarden.errors import Conflict, GardenError, NotFound
from modelgarden.security.keys import KeyRing, expiry

router = APIRouter(tags=["keys"])
JSON = "application/json"


class KeyRequest(BaseModel):
    """``POST /garden/keys``: a new key's name, scope, model globs, expiry and limits."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
    scope: Literal["user", "admin"] = "user"
    models: list[str] = Field(default_factory=list, description="Globs; empty: every model.")
    expires: str | None = Field(
        default=None, description="A duration from now (30d, 12h) or an ISO date (UTC)."
    )
    rpm: int | None = Field(default=None, ge=1, description="Requests per minute.")
    tpm: int | None = Field(default=None, ge=1, description="Tokens per minute.")
    max_concurrent: int | None = Field(default=None, ge=1, description="Requests at once.")

    @field_validator("models")
    @classmethod
    def _globs(cls, globs: list[str]) -> list[str]:
        cleaned = [g.strip() for g in globs if g.strip()]
        if any("," in g for g in cleaned):
            raise ValueError("one glob per item, without commas")
        return cleaned


def _keys(request: Request) -> KeyRing:
    settings = app_state(request).settings
    if settings.ephemeral and not settings.database_url.startswith(("postgresql", "postgres")):
        raise Conflict(
            "this gateway's database would vanish with its container, and its keys with it: "
            "set GARDEN_DATABASE_URL to a PostgreSQL database first"
        )
    keys = app_state(request).keys
    if keys.db is None:
        err = GardenError("the key database is not available")
        err.status = 503
        raise err
    return keys


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON)


@router.get("/garden/keys")
async def list_keys(request: Request) -> Response:
    """Every key: id, name, scope, models, expiry, limits and state (never a secret)."""
    return _json({"keys": [k.public() for k in _keys(request).all()]})


@router.post(
    "/garden/keys",
    status_code=201,
    openapi_extra=body_schema(
        KeyRequest, {"name": "ci", "scope": "user", "models": ["smollm2*"], "expires": "30d"}
    ),
)
async def create_key(request: Request) -> Response:
    """Create a key; the answer holds its secret, which is never shown again."""
    req, _ = await parse(request, KeyRequest)
    limits = (req.rpm, req.tpm, req.max_concurrent)
    key, secret = await _keys(request).create(
        req.name, req.scope, req.models, expiry(req.expires), limits
    )
    return _json({**key.public(), "key": secret}, status=201)


@router.delete("/garden/keys/{ref}")
async def revoke_key(request: Request, ref: str) -> Response:
    """Revoke a key by id or name; it stops working at once here, within seconds elsewhere."""
    key = await _keys(request).revoke(ref)
    if key is None:
        raise NotFound(f"no key {ref!r}")
    return _json(key.public())
