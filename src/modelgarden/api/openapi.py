"""OpenAPI documentation for routes that read their bodies themselves.

The routes parse bodies with orjson and validate them with the wire models (for speed and
for errors in each API's own shape), so FastAPI cannot infer the request schemas; these
helpers name them, and :func:`install_schemas` adds the models to the document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

_MODELS: list[type[BaseModel]] = []
REF = "#/components/schemas/{model}"


def body_schema(model: type[BaseModel], example: dict[str, Any] | None = None) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON request body of this wire model."""
    if model not in _MODELS:
        _MODELS.append(model)
    media: dict[str, Any] = {"schema": {"$ref": REF.format(model=model.__name__)}}
    if example is not None:
        media["example"] = example
    return {"requestBody": {"required": True, "content": {"application/json": media}}}


def install_schemas(app: FastAPI) -> None:
    """Make ``app.openapi()`` include the schemas named by :func:`body_schema`."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
        _, defs = models_json_schema([(m, "validation") for m in _MODELS], ref_template=REF)
        doc.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        app.openapi_schema = doc
        return doc

    app.openapi = build  # type: ignore[method-assign]
