"""The client's logic, free of I/O: where to connect, what to send, how to read answers.

The sync and async clients are thin twins over this base: each turns a :class:`Call` into
an HTTP exchange with ``httpx`` and hands the bytes back here to be parsed. Retries,
breakers and telemetry live in :mod:`modelgarden.client._plan`, request bodies in
:mod:`modelgarden.client._build`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import httpx
import orjson
from pydantic import BaseModel

from modelgarden.client.errors import ResponseError, StreamError, for_status
from modelgarden.errors import message_of
from modelgarden.hosts import DEFAULT_HOST, DEFAULT_PORT, parse_host

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


def resolve_hosts(host: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The base URLs to use, in priority order (the first is tried first).

    ``host`` may be one address, several separated by commas, or a list of them; without
    it, ``GARDEN_HOST``, else ``OLLAMA_HOST`` (each may hold a comma-separated list), else
    the default. Each is resolved as :func:`resolve_host` does; duplicates are dropped.
    """
    if host is None or (isinstance(host, str) and not host.strip()):
        host = os.environ.get("GARDEN_HOST") or os.environ.get("OLLAMA_HOST") or ""
    items = (
        host.split(",") if isinstance(host, str) else [h for part in host for h in part.split(",")]
    )
    urls = [resolve_host(item) for item in items if item.strip()]
    return tuple(dict.fromkeys(urls)) or (resolve_host(),)


def auth_headers(api_key: str | None = None) -> dict[str, str]:
    """``Authorization`` for a gateway with API keys: the argument, else ``GARDEN_API_KEY``,
    else ``OLLAMA_API_KEY``; none when no key is known."""
    key = api_key or os.environ.get("GARDEN_API_KEY") or os.environ.get("OLLAMA_API_KEY")
    return {"authorization": f"Bearer {key.strip()}"} if key and key.strip() else {}


@dataclass(frozen=True)
class Call:
    """One logical call: method, path, JSON body, and how its answer is read.

    ``stream``: the answer is a stream of records (NDJSON, or SSE when ``sse``).
    ``name``: the client method, for telemetry. ``accept``: error statuses that are an
    answer here rather than an error (``HEAD`` of a missing blob is a 404). ``upload``:
    a file sent as the raw body instead of JSON.
    """

    method: str
    path: str
    json: dict[str, Any] | None = None
    stream: bool = False
    name: str = ""
    sse: bool = False
    accept: frozenset[int] = frozenset()
    upload: Path | None = None


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True, by_alias=True)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence | Set) and not isinstance(value, str | bytes):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_json(body: Mapping[str, Any]) -> bytes:
    """A request body as JSON; pydantic models (``ollama.Message``...) and mappings work."""
    return orjson.dumps(dict(body), default=_jsonable)


def attempt_timeout(default: float | None, connect: float, per_call: float | None) -> httpx.Timeout:
    """The ``httpx`` timeout of one attempt: the call's own, else the client's default.

    Connecting is capped at ``connect`` seconds (or the whole timeout when shorter).
    """
    total = per_call if per_call is not None else default
    return httpx.Timeout(total, connect=connect if total is None else min(connect, total))


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    """The request body without unset fields."""
    return {k: v for k, v in data.items() if v is not None}


def error_for(status: int, body: bytes, retry_after: str | None) -> ResponseError:
    """The typed error for an error answer (``retry_after``: the header, delay-seconds only)."""
    try:
        data = orjson.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else data
        message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except orjson.JSONDecodeError:
        message = body.decode(errors="replace").strip() or f"HTTP {status}"
    delay = float(retry_after) if retry_after and retry_after.replace(".", "").isdigit() else None
    return for_status(status, message, delay)


def raise_for(status: int, body: bytes, retry_after: str | None) -> None:
    """Raise the typed error for an error answer."""
    if status >= 400:
        raise error_for(status, body, retry_after)


def parse_line(line: bytes | str, model: type[M]) -> M | None:
    """One NDJSON line as a typed record; raises :class:`StreamError` for an error record."""
    line = line.strip()
    if not line:
        return None
    data = orjson.loads(line)
    if isinstance(data, dict) and "error" in data:
        raise StreamError(message_of(data["error"]))
    return model.model_validate(data)


def parse_body(body: bytes, model: type[M]) -> M:
    """A whole JSON answer as a typed response."""
    return model.model_validate(orjson.loads(body))


#: What :func:`parse_sse_line` returns for ``data: [DONE]``.
DONE: Final = object()


def parse_sse_line(line: str | bytes, model: type[M]) -> M | object | None:
    """One line of an SSE stream: a typed record, :data:`DONE` at the end, ``None`` otherwise.

    Only ``data:`` lines carry records; comments, ``event:``/``id:``/``retry:`` lines and
    blank lines are skipped. An ``{"error": ...}`` record raises :class:`StreamError`.
    """
    text = line.decode(errors="replace") if isinstance(line, bytes) else line
    text = text.strip()
    if not text.startswith("data:"):
        return None
    payload = text[5:].strip()
    if payload == "[DONE]":
        return DONE
    return parse_line(payload.encode(), model) if payload else None
