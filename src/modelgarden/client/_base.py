"""The client's logic, free of I/O: where to connect, what to send, how to read answers.

The sync and async clients are thin twins over this base: each turns a :class:`Call` into
an HTTP exchange with ``httpx`` and hands the bytes back here to be parsed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from modelgarden.client.errors import StreamError, for_status
from modelgarden.config import DEFAULT_HOST, DEFAULT_PORT, parse_host

M = TypeVar("M", bound=BaseModel)


def resolve_host(host: str | None = None) -> str:
    """Base URL from the argument, else ``GARDEN_HOST``, else ``OLLAMA_HOST``, else default.

    As the ``ollama`` client does: no scheme means ``http`` and port 11434; a scheme without
    a port means that scheme's port (80 or 443); a path prefix is kept; ``0.0.0.0`` (an
    address to listen on) is reached through 127.0.0.1.
    """
    raw = (host or os.environ.get("GARDEN_HOST") or os.environ.get("OLLAMA_HOST") or "").strip()
    scheme, rest = "http", raw
    if "://" in raw:
        scheme, rest = raw.split("://", 1)
    hostport, _, path = rest.partition("/")
    name, port = parse_host(hostport) if hostport else (DEFAULT_HOST, DEFAULT_PORT)
    if "://" in raw and not re.search(r":\d+$", hostport):
        port = 443 if scheme == "https" else 80
    if name in ("0.0.0.0", "::", ""):
        name = DEFAULT_HOST
    if ":" in name:
        name = f"[{name}]"
    suffix = f"/{path.rstrip('/')}" if path.strip("/") else ""
    return f"{scheme}://{name}:{port}{suffix}"


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
        err = data["error"]
        raise StreamError(str(err.get("message", err) if isinstance(err, dict) else err))
    return model.model_validate(data)


def parse_body(body: bytes, model: type[M]) -> M:
    """A whole JSON answer as a typed response."""
    return model.model_validate(orjson.loads(body))
