"""What one call cost: :class:`CallStats`, how it is read off answers, and where it goes.

Each call produces one :class:`CallStats`: it is put on the typed response (``.telemetry``)
or on the stream once the stream ends, handed to the client's ``on_call`` callback, and
logged as one structlog ``debug`` line. Nothing from the prompt or the answer is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import structlog

LOGGER_NAME = "modelgarden.client"


@dataclass(frozen=True)
class CallStats:
    """One call's telemetry: who answered, how long it took, how many tokens, how many tries.

    ``latency_s`` runs from the call's start (the first iteration, for a stream) to its
    end, retries and pauses included; ``ttft_s`` is the time to the first streamed chunk.
    ``tokens_in``/``tokens_out`` come from Ollama's ``prompt_eval_count``/``eval_count``
    or OpenAI's ``usage``. ``attempts`` counts requests that went out (0 when a breaker
    failed the call fast); ``retries`` is ``attempts - 1`` (never negative). ``trace_id``
    is the OpenTelemetry trace the call belongs to (sent as ``traceparent``), when there
    is one: the gateway's spans for the call are in the same trace.
    """

    method: str
    path: str
    stream: bool
    ok: bool
    base_url: str | None
    status: int | None
    error: str | None
    latency_s: float
    ttft_s: float | None
    tokens_in: int | None
    tokens_out: int | None
    attempts: int
    retries: int
    hosts_tried: tuple[str, ...]
    chunks: int
    trace_id: str | None = None

    def log_fields(self) -> dict[str, Any]:
        """The fields for the log line (times in milliseconds)."""
        fields = asdict(self)
        fields["latency_ms"] = round(fields.pop("latency_s") * 1000, 2)
        ttft = fields.pop("ttft_s")
        fields["ttft_ms"] = None if ttft is None else round(ttft * 1000, 2)
        fields["hosts_tried"] = list(self.hosts_tried)
        return fields


OnCall = Callable[[CallStats], None]


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def token_counts(record: object) -> tuple[int | None, int | None]:
    """Tokens in and out on a response or chunk: Ollama counters or OpenAI ``usage``."""
    usage = getattr(record, "usage", None)
    if usage is not None:
        return _count(getattr(usage, "prompt_tokens", None)), _count(
            getattr(usage, "completion_tokens", None)
        )
    return _count(getattr(record, "prompt_eval_count", None)), _count(
        getattr(record, "eval_count", None)
    )


def error_name(error: BaseException | str | None) -> str | None:
    """How an error is named in telemetry: the class name, or the given text."""
    if error is None or isinstance(error, str):
        return error
    return type(error).__name__


_fallback: Any = None


def logger() -> Any:
    """The client's structlog logger.

    When the application configured structlog, its configuration is used. Otherwise the
    line goes through the standard library logger ``modelgarden.client`` (silent unless
    that logger is enabled for DEBUG), so a library never prints to stdout uninvited.
    """
    global _fallback
    if structlog.is_configured():
        return structlog.get_logger(LOGGER_NAME)
    if _fallback is None:
        _fallback = structlog.wrap_logger(
            logging.getLogger(LOGGER_NAME),
            processors=[
                structlog.stdlib.filter_by_level,
                structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True),
            ],
            wrapper_class=structlog.stdlib.BoundLogger,
        )
    return _fallback


def publish(stats: CallStats, on_call: OnCall | None) -> None:
    """Log the call (one debug line) and hand it to the callback.

    A callback that raises does not fail the call: the error is logged as a warning.
    """
    log = logger()
    log.debug("client call", **stats.log_fields())
    if on_call is None:
        return
    try:
        on_call(stats)
    except Exception as exc:  # a telemetry sink must never break the call it observes
        log.warning("on_call callback failed", error=repr(exc), method=stats.method)
