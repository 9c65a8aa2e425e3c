"""Reading request bodies: JSON parsed once with orjson, validated with the wire models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from modelgarden.errors import BadRequest

M = TypeVar("M", bound=BaseModel)


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object; :class:`BadRequest` for anything else."""
    raw = await request.body()
    if not raw.strip():
        raise BadRequest("missing request body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON in request body: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def describe(exc: ValidationError) -> tuple[str, str | None]:
    """A one-line message for the first validation error, and the parameter it names."""
    return describe_first(exc.errors(include_url=False))


#: Names pydantic gives the branches of a union in an error's location (not fields).
_BRANCHES = frozenset({"str", "int", "float", "bool", "bytes", "list", "dict", "none"})


def _field_path(loc: Sequence[Any]) -> str:
    """An error location as the client wrote it: without the union branch pydantic tried
    (``input.str``, ``content.list[...]``) or the parts FastAPI adds (``body``, ``query``)."""
    return ".".join(
        str(p)
        for p in loc
        if not (isinstance(p, str) and (p in _BRANCHES or "[" in p or p.startswith("function-")))
        and p not in ("query", "path", "body")
    )


def describe_first(errors: Sequence[Any]) -> tuple[str, str | None]:
    """The one-line message of :func:`describe` for pydantic-style error dicts (also what
    FastAPI reports for bad query and path parameters). A value that fits no branch of a
    union gets every branch's complaint at once, not only the first's."""
    if not errors:
        return "invalid request", None
    loc = _field_path(errors[0]["loc"])
    msgs: list[str] = []
    for err in errors:
        msg = str(err["msg"]).removeprefix("Value error, ")
        if _field_path(err["loc"]) == loc and msg not in msgs:
            msgs.append(msg)
    msg = msgs[0] + "".join(", or " + m.removeprefix("Input should be ") for m in msgs[1:])
    return (f"invalid request: {loc}: {msg}" if loc else f"invalid request: {msg}"), loc or None


def validate(model: type[M], data: dict[str, Any]) -> M:
    """Validate a parsed body against a wire model; :class:`BadRequest` when it does not fit."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = describe(exc)
        raise BadRequest(message, param=param) from None


async def parse(request: Request, model: type[M]) -> tuple[M, dict[str, Any]]:
    """Read, parse and validate; returns the typed request and the raw object."""
    data = await read_json(request)
    return validate(model, data), data
