"""Structured logging with structlog: readable on a terminal, JSON lines otherwise.

Values of fields named like credentials are masked before rendering, whoever logs them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime
import logging
import sys
from collections.abc import MutableMapping
from typing import Any, BinaryIO

import orjson
import structlog

#: Field names whose values never reach a log.
SECRET_FIELDS = frozenset(
    {"authorization", "api_key", "apikey", "password", "secret", "token", "cookie", "key"}
)


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask the values of credential-like fields."""
    for name in SECRET_FIELDS.intersection(event):
        event[name] = "***"
    return event


def _dumps(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=str)


class CoalescedOutput:
    """A binary stream whose flushes, while an event loop runs, happen once per loop turn.

    structlog flushes after every line; under load that is one ``write`` system call per
    request. Here a flush asked for on the event loop is deferred to the end of the current
    turn (``call_soon``), so the lines of all requests that ended in that turn go out in one
    call, with no added delay. Off the loop (start-up, shutdown, threads) it flushes at once.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self._pending = False

    def write(self, data: bytes) -> int:
        """Buffer a line."""
        return self.raw.write(data)

    def flush(self) -> None:
        """Flush now, or at the end of this loop turn when called on a running loop."""
        if self._pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.raw.flush()
            return
        self._pending = True
        loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._pending = False
        self.raw.flush()


def _flush_quietly(raw: BinaryIO) -> None:
    """Flush at exit, unless the stream is already gone (closed by whoever owned it)."""
    with contextlib.suppress(ValueError, OSError):
        raw.flush()


class _RequestLines:
    """Where per-request lines go when they are JSON at a level that shows them: written
    directly, in exactly the shape structlog's chain gives them, at a fraction of its cost
    (this line is the one log call on the hot path)."""

    output: CoalescedOutput | None = None


def request_line(log: Any, fields: dict[str, Any]) -> None:
    """Log one request's line (``event`` ``request``, level info) through ``log``, or
    straight to the JSON output when that is the configured one."""
    output = _RequestLines.output
    if output is None:
        log.info("request", **fields)
        return
    fields["event"] = "request"
    fields["level"] = "info"
    now = datetime.datetime.now(tz=datetime.UTC).isoformat()
    fields["timestamp"] = now.replace("+00:00", "Z")
    output.write(_dumps(fields) + b"\n")
    output.flush()


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog and the standard library's logging once, at start.

    Every request logs one line, so the chain is kept short: no context-variable merge
    (it copies the whole context per call, about half the cost of a line), orjson bytes
    written straight to stderr's buffer.
    """
    as_json = (not sys.stderr.isatty()) if json is None else json
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer: structlog.types.Processor
    factory: Any
    _RequestLines.output = None
    if as_json:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        output = CoalescedOutput(sys.stderr.buffer)
        atexit.register(_flush_quietly, output.raw)
        factory = structlog.BytesLoggerFactory(file=output)  # type: ignore[arg-type]
        if numeric <= logging.INFO:
            _RequestLines.output = output
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    structlog.configure(
        processors=[
            redact_secrets,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(message)s"
    )
