"""Traces: OpenTelemetry spans for inference requests, exported over OTLP/HTTP.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set
and the ``otel`` extra is installed. Off, nothing here runs per request: the meter's
``trace`` is ``None`` and every seam (:class:`~modelgarden.telemetry.meter.Meter`, the
local and remote backends) checks that one attribute; nothing from OpenTelemetry is even
imported. On, each process (the primary and every relay worker) has its own
:class:`Tracing`: a tracer provider whose batch processor exports from a thread, configured
by the standard ``OTEL_*`` variables (service name, resource attributes, headers, sampler,
batch delays).

One inference request is one :class:`RequestTrace`:

- the server span ``{gen_ai.operation.name} {gen_ai.request.model}`` (``chat smollm2:135m``),
  continuing the client's W3C ``traceparent``; it ends when the request's record is made
  (:meth:`RequestTrace.end`) and carries the GenAI attributes, the backend, the status and
  the time to first token as the ``gen_ai.first_token`` event;
- ``garden.queue``: waiting for a runner slot (and for a remote backend's concurrency
  limit, when it was full), with ``garden.runner.load`` inside it when this request's wait
  loaded the model;
- ``garden.upstream``: the call to the runner or the remote service, from sending to the
  answer's last byte; its context is the ``traceparent`` sent upstream, so a second gateway
  (or any traced service) continues the same trace.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import structlog

from modelgarden import __version__
from modelgarden.genai import OPERATIONS

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

    from modelgarden.telemetry.record import RequestRecord

log = structlog.get_logger(__name__)
T = TypeVar("T")

SERVER_SPAN_EVENT_FIRST_TOKEN = "gen_ai.first_token"
QUEUE_SPAN = "garden.queue"
LOAD_SPAN = "garden.runner.load"
UPSTREAM_SPAN = "garden.upstream"
#: How far from the end of an answer its finish reasons are looked for.
FINISH_TAIL = 4096
_FINISH = re.compile(rb'"(?:done_reason|finish_reason)"\s*:\s*"([A-Za-z_]{1,40})"')
_TRUE = frozenset({"1", "true", "yes", "on"})

#: (start, end) in ``perf_counter_ns``, and the attributes, of a runner's load.
LoadWindow = tuple[int, int, Mapping[str, Any]]


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, the SDK not disabled,
    and the traces exporter not ``none``."""
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint or environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False
    return environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none"


def finish_reasons(tail: bytes) -> tuple[str, ...]:
    """The finish reasons in an answer's last bytes (Ollama ``done_reason``, OpenAI
    ``finish_reason``), each once, in order."""
    found = _FINISH.findall(tail, max(0, len(tail) - FINISH_TAIL))
    return tuple(dict.fromkeys(r.decode() for r in found))


def safe_url(url: str) -> str:
    """A URL without its user info, query or fragment (nothing secret goes in a span)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class Tracing:
    """Owns one process's tracer provider (its exporter and span processor) and starts
    each inference request's :class:`RequestTrace`."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("modelgarden", __version__)
        self.propagator = propagate.get_global_textmap()
        self.in_context = trace.set_span_in_context
        self.server, self.client, self.internal = (
            SpanKind.SERVER,
            SpanKind.CLIENT,
            SpanKind.INTERNAL,
        )
        self.error = StatusCode.ERROR
        self.status = Status

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Tracing | None:
        """The process's tracing as the ``OTEL_*`` variables ask, or ``None`` when they do
        not (or the ``otel`` extra is missing: then a warning says so, once)."""
        env = os.environ if environ is None else environ
        if not wanted(env):
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
                "no traces (pip install 'modelgarden[otel]')"
            )
            return None
        tracing = cls.with_exporter(OTLPSpanExporter(), batch=True, environ=env)
        log.info("exporting traces", endpoint=safe_url(_endpoint(env)))
        return tracing

    @classmethod
    def with_exporter(
        cls,
        exporter: SpanExporter,
        *,
        batch: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> Tracing:
        """Tracing into ``exporter`` (batched from a thread, or synchronously for tests);
        the sampler and resource follow the ``OTEL_*`` variables."""
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        environ = environ or {}
        attributes: dict[str, Any] = {"service.version": __version__, "process.pid": os.getpid()}
        if name := environ.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = name
        elif "service.name=" not in environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
            attributes["service.name"] = "modelgarden"
        provider = TracerProvider(resource=Resource.create(attributes))
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
        return cls(provider)

    def start(
        self, headers: list[tuple[bytes, bytes]], start_ns: int, request_id: str, path: str
    ) -> RequestTrace:
        """The trace of a request received at ``start_ns`` (``perf_counter_ns``), continuing
        the client's ``traceparent`` when it sent one."""
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        parent = self.propagator.extract(carrier)
        offset = time.time_ns() - time.perf_counter_ns()
        span = self.tracer.start_span(
            f"POST {path}",
            context=parent,
            kind=self.server,
            start_time=start_ns + offset,
            attributes={
                "http.request.method": "POST",
                "url.path": path,
                "garden.request_id": request_id,
            },
        )
        return RequestTrace(self, span, offset)

    def shutdown(self) -> None:
        """Export what is left and stop (blocks up to the exporter's timeout)."""
        self.provider.shutdown()


def _endpoint(environ: Mapping[str, str]) -> str:
    return environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT", ""
    )


class RequestTrace:
    """Owns one inference request's server span and makes its children; ends once."""

    __slots__ = ("context", "offset", "request_model", "span", "tracing")

    def __init__(self, tracing: Tracing, span: Span, offset: int) -> None:
        self.tracing = tracing
        self.span = span
        self.context: Context = tracing.in_context(span)
        #: ``time_ns() - perf_counter_ns()`` when the request began: turns the meter's
        #: monotonic readings into span timestamps.
        self.offset = offset
        #: The model the client asked for (the record holds the one that answered).
        self.request_model = ""

    def _child(
        self, name: str, kind: Any, attributes: Mapping[str, Any], start: int | None = None
    ) -> Span:
        return self.tracing.tracer.start_span(
            name,
            context=self.context,
            kind=kind,
            attributes=attributes,
            start_time=None if start is None else start + self.offset,
        )

    async def queued(
        self,
        work: Awaitable[T],
        backend: str,
        load: Callable[[T], LoadWindow | None] | None = None,
    ) -> T:
        """Await ``work`` (waiting for a slot) inside a ``garden.queue`` span; ``load``
        tells whether the wait loaded a runner, and when."""
        start = time.perf_counter_ns()
        span = self._child(QUEUE_SPAN, self.tracing.internal, {"garden.backend": backend}, start)
        try:
            result = await work
        except BaseException as exc:
            self._fail(span, exc)
            span.end()
            raise
        window = load(result) if load is not None else None
        if window is not None:
            began, ended, attributes = window
            self.tracing.tracer.start_span(
                LOAD_SPAN,
                context=self.tracing.in_context(span, self.context),
                kind=self.tracing.internal,
                attributes=attributes,
                start_time=began + self.offset,
            ).end(ended + self.offset)
        span.end()
        return result

    def upstream(self, backend: str) -> Upstream:
        """Begin the call to a backend; its headers carry the ``traceparent``."""
        span = self._child(
            UPSTREAM_SPAN,
            self.tracing.client,
            {"garden.backend": backend, "http.request.method": "POST"},
        )
        headers: dict[str, str] = {}
        self.tracing.propagator.inject(headers, context=self.tracing.in_context(span))
        return Upstream(self, span, headers)

    def _fail(self, span: Span, exc: BaseException) -> None:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(self.tracing.status(self.tracing.error, message))

    def end(self, record: RequestRecord, first_ns: int, tail: bytes) -> None:
        """End the server span with what the request's record says."""
        span = self.span
        if not span.is_recording():
            span.end()
            return
        operation = OPERATIONS.get(record.endpoint)
        model = self.request_model or record.model
        if operation and model:
            span.update_name(f"{operation} {model}")
        attributes: dict[str, Any] = {
            "gen_ai.request.model": model,
            "gen_ai.response.model": record.model,
            "garden.backend": record.backend,
            "garden.api": record.api,
            "garden.stream": record.stream,
            "garden.overhead_ms": round(record.overhead_ms, 3),
            "http.response.status_code": record.status,
        }
        if operation:
            attributes["gen_ai.operation.name"] = operation
        if record.prompt_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = record.prompt_tokens
        if record.completion_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = record.completion_tokens
        if reasons := finish_reasons(tail):
            attributes["gen_ai.response.finish_reasons"] = reasons
        if record.status >= 400:
            attributes["error.type"] = str(record.status)
        span.set_attributes(attributes)
        if first_ns and record.ttft_ms is not None:
            span.add_event(
                SERVER_SPAN_EVENT_FIRST_TOKEN,
                {"gen_ai.server.time_to_first_token": record.ttft_ms / 1000},
                timestamp=first_ns + self.offset,
            )
        if record.status >= 500:  # a client's mistake (4xx) or departure (499) is not the server's
            span.set_status(self.tracing.status(self.tracing.error, record.error or ""))
        span.end(time.perf_counter_ns() + self.offset)


class Upstream:
    """Owns the ``garden.upstream`` span of one call to a backend, and the headers that
    carry its context upstream."""

    __slots__ = ("headers", "span", "trace")

    def __init__(self, trace: RequestTrace, span: Span, headers: dict[str, str]) -> None:
        self.trace = trace
        self.span = span
        #: ``traceparent`` (and ``tracestate``) for the upstream request.
        self.headers = headers

    def answered(self, status: int, url: str) -> None:
        """The upstream at ``url`` answered with ``status``."""
        parts = urlsplit(url)
        attributes: dict[str, Any] = {
            "http.response.status_code": status,
            "server.address": parts.hostname or "",
            "server.port": parts.port or (443 if parts.scheme == "https" else 80),
            "url.full": safe_url(url),
        }
        if status >= 400:
            attributes["error.type"] = str(status)
        self.span.set_attributes(attributes)

    def failed(self, exc: BaseException) -> None:
        """The call failed before an answer began: end the span with the error."""
        self.trace._fail(self.span, exc)
        self.span.end()

    def end(self) -> None:
        """The answer's last byte arrived (or the answer was abandoned)."""
        self.span.end()
