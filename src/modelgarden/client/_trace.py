"""The client's part of a trace: one span per call, and the ``traceparent`` it sends.

Only when OpenTelemetry's API is installed, and through the application's own tracer
provider (the global one): an application that traces gets a client span per call,
child of whatever span is current, and the gateway's spans continue it. An application
that set no provider records nothing, but a current span's context (from its own
instrumentation) is still passed on, so the gateway joins that trace. Without
OpenTelemetry nothing here runs beyond one cached check.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from modelgarden import __version__
from modelgarden.genai import OPERATIONS

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from modelgarden.client._base import Call
    from modelgarden.client.telemetry import CallStats


@functools.cache
def _tracer() -> Tracer | None:
    """The client's tracer on the global provider, or ``None`` without OpenTelemetry."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace.get_tracer("modelgarden.client", __version__)


class CallTrace:
    """Owns one call's client span and the headers that carry its context to the server."""

    __slots__ = ("headers", "span")

    def __init__(self, span: Span, headers: dict[str, str]) -> None:
        self.span = span
        #: ``traceparent`` (and ``tracestate``) for every attempt of the call; may be empty.
        self.headers = headers

    @property
    def trace_id(self) -> str | None:
        """The call's trace id (32 hex digits), when it belongs to a trace."""
        context = self.span.get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else None

    def end(self, stats: CallStats) -> None:
        """End the span with how the call went."""
        from opentelemetry.trace import StatusCode

        span = self.span
        if span.is_recording():
            attributes: dict[str, Any] = {"garden.attempts": stats.attempts}
            if stats.status is not None:
                attributes["http.response.status_code"] = stats.status
            if stats.base_url is not None:
                attributes["url.full"] = stats.base_url + stats.path
            if stats.tokens_in is not None:
                attributes["gen_ai.usage.input_tokens"] = stats.tokens_in
            if stats.tokens_out is not None:
                attributes["gen_ai.usage.output_tokens"] = stats.tokens_out
            if stats.error is not None:
                attributes["error.type"] = stats.error
                span.set_status(StatusCode.ERROR, stats.error)
            span.set_attributes(attributes)
        span.end()


def start(call: Call) -> CallTrace | None:
    """The trace of one call, or ``None`` when OpenTelemetry is not installed."""
    tracer = _tracer()
    if tracer is None:
        return None
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind

    model = (call.json or {}).get("model")
    operation = OPERATIONS.get(call.path)
    attributes: dict[str, Any] = {"http.request.method": call.method, "url.path": call.path}
    if operation is not None:
        attributes["gen_ai.operation.name"] = operation
        name = f"{operation} {model}" if model else operation
    else:
        name = f"{call.method} {call.path}"
    if isinstance(model, str):
        attributes["gen_ai.request.model"] = model
    span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
    headers: dict[str, str] = {}
    propagate.inject(headers, context=trace.set_span_in_context(span))
    return CallTrace(span, headers)
