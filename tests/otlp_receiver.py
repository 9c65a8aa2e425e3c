"""A small OTLP/HTTP trace receiver on loopback, for tests that check exported spans.

The OpenTelemetry Collector is not in the package registries this project installs from,
so this plays its part: ``POST /v1/traces`` with an ``ExportTraceServiceRequest`` in
protobuf (what ``opentelemetry-exporter-otlp-proto-http`` sends), decoded with
``opentelemetry-proto``, each span kept with its resource's attributes. Tests wait on a
condition over the spans received (never a guessed sleep).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

KINDS = {
    Span.SPAN_KIND_INTERNAL: "internal",
    Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_CLIENT: "client",
}
STATUSES = {Status.STATUS_CODE_UNSET: "unset", Status.STATUS_CODE_OK: "ok"}
STATUSES[Status.STATUS_CODE_ERROR] = "error"


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    return getattr(value, which) if which else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


@dataclass(frozen=True)
class Event:
    """A span event: name, time (ns since the epoch), attributes."""

    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, ids as hex, with its resource's attributes."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[Event]
    status: str
    status_message: str
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def service(self) -> str:
        return str(self.resource.get("service.name", ""))


class OTLPReceiver:
    """Runs the receiver on a free loopback port in a background thread."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        #: ``Content-Type`` and user headers of each export request.
        self.requests: list[dict[str, str]] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request, dict(self.headers.items()))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> OTLPReceiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _add(self, request: ExportTraceServiceRequest, headers: dict[str, str]) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    spans.append(
                        ReceivedSpan(
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            name=s.name,
                            kind=KINDS.get(s.kind, str(s.kind)),
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            attributes=_attributes(s.attributes),
                            events=[
                                Event(e.name, e.time_unix_nano, _attributes(e.attributes))
                                for e in s.events
                            ],
                            status=STATUSES.get(s.status.code, str(s.status.code)),
                            status_message=s.status.message,
                            resource=resource,
                        )
                    )
        with self._changed:
            self.spans.extend(spans)
            self.requests.append(headers)
            self._changed.notify_all()

    def wait_for(
        self, found: Callable[[list[ReceivedSpan]], bool], timeout: float = 30.0
    ) -> list[ReceivedSpan]:
        """Every span received, once ``found`` holds for them (else an AssertionError)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not found(self.spans):
                left = deadline - time.monotonic()
                assert left > 0, f"spans never matched; got {[s.name for s in self.spans]}"
                self._changed.wait(left)
            return list(self.spans)

    def in_trace(self, trace_id: str) -> list[ReceivedSpan]:
        """The spans received so far in one trace."""
        with self._changed:
            return [s for s in self.spans if s.trace_id == trace_id]
