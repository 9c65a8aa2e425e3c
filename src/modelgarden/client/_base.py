"""The client's logic, free of I/O: where to connect, what to send, how to read answers.

The sync and async clients are thin twins over this base: each turns a :class:`Call` into
an HTTP exchange with ``httpx`` and hands the bytes back here to be parsed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from modelgarden.client.errors import StreamError, for_status
from modelgarden.config import DEFAULT_HOST, DEFAULT_PORT, parse_host

M = TypeVar("M", bound=BaseModel)


def resolve_host(host: str | None = None) -> str:
    """Base URL from the argument, else ``GARDEN_HOST``, else ``OLLAMA_HOST``, else default."""
    raw = host or os.environ.get("GARDEN_HOST") or os.environ.get("OLLAMA_HOST") or ""
    scheme = "https" if raw.startswith("https://") else "http"
    path = ""
    if "://" in raw:
        rest = raw.split("://", 1)[1]
        if "/" in rest:
            path = "/" + rest.split("/", 1)[1].rstrip("/")
    name, port = parse_host(raw) if raw else (DEFAULT_HOST, DEFAULT_PORT)
    if name in ("0.0.0.0", "::", ""):
        name = DEFAULT_HOST
    if ":" in name:
        name = f"[{name}]"
    return f"{scheme}://{name}:{port}{path}"


@dataclass(frozen=True)
class Call:
    """One HTTP call: method, path, JSON body, and whether the answer streams."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    stream: bool = False


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    """The request body without unset fields."""
    return {k: v for k, v in data.items() if v is not None}


def raise_for(status: int, body: bytes, retry_after: str | None) -> None:
    """Raise the typed error for an error answer."""
    if status < 400:
        return
    try:
        data = orjson.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else data
        message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except orjson.JSONDecodeError:
        message = body.decode(errors="replace").strip() or f"HTTP {status}"
    delay = float(retry_after) if retry_after and retry_after.replace(".", "").isdigit() else None
    raise for_status(status, message, delay)


def parse_line(line: bytes, model: type[M]) -> M | None:
    """One NDJSON line as a typed record; raises :class:`StreamError` for an error record."""
    line = line.strip()
    if not line:
        return None
    data = orjson.loads(line)
    if isinstance(data, dict) and "error" in data:
        raise StreamError(str(data["error"]))
    return model.model_validate(data)


def parse_body(body: bytes, model: type[M]) -> M:
    """A whole JSON answer as a typed response."""
    return model.model_validate(orjson.loads(body))
