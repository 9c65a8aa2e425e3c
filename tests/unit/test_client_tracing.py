"""The client's traces: a span per call, the ``traceparent`` every attempt carries, a trace
continued from the application's current span, and nothing recorded without a provider.

The requests go to ``httpx.MockTransport`` handlers (the server's side is checked by the
integration tests); spans to the SDK's in-memory exporter.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from modelgarden.client import AsyncClient, CallStats, Client, ClientOptions, RetryPolicy, _trace

FINAL = {
    "model": "m",
    "message": {"role": "assistant", "content": "hi"},
    "done": True,
    "done_reason": "stop",
    "prompt_eval_count": 7,
    "eval_count": 2,
}


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The application's tracer provider, as the client's global one would be."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(_trace, "_tracer", lambda: provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


class Recorder:
    """A transport that answers a chat and keeps every request's headers."""

    def __init__(self, statuses: tuple[int, ...] = (200,)) -> None:
        self.headers: list[httpx.Headers] = []
        self.statuses = list(statuses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status != 200:
            return httpx.Response(status, json={"error": "busy"})
        return httpx.Response(200, content=orjson.dumps(FINAL))


def _client(recorder: Recorder, retries: int = 0) -> tuple[Client, list[CallStats]]:
    calls: list[CallStats] = []
    options = ClientOptions(retry=RetryPolicy(max_retries=retries, base_delay=0.0, jitter=False))
    client = Client(
        "127.0.0.1:9",
        transport=httpx.MockTransport(recorder),
        options=options,
        on_call=calls.append,
    )
    return client, calls


def _ids(traceparent: str) -> tuple[str, str]:
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    return trace_id, span_id


def test_a_call_is_a_client_span_whose_context_is_sent(exporter: InMemorySpanExporter) -> None:
    recorder = Recorder()
    client, calls = _client(recorder)
    with client:
        client.chat("m", [{"role": "user", "content": "hello"}])
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat m" and span.kind is SpanKind.CLIENT
    assert span.parent is None  # no current span: the call starts the trace
    trace_id, span_id = _ids(recorder.headers[0]["traceparent"])
    assert trace_id == format(span.context.trace_id, "032x")
    assert span_id == format(span.context.span_id, "016x")
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.request.model"] == "m" and attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.usage.input_tokens"] == 7 and attrs["gen_ai.usage.output_tokens"] == 2
    assert attrs["http.response.status_code"] == 200
    assert calls[0].trace_id == trace_id


def test_a_call_continues_the_applications_current_span(
    exporter: InMemorySpanExporter,
) -> None:
    recorder = Recorder()
    client, _ = _client(recorder)
    tracer = _trace._tracer()
    assert tracer is not None
    with tracer.start_as_current_span("handle request") as parent, client:
        client.chat("m", [{"role": "user", "content": "hello"}])
    call = next(s for s in exporter.get_finished_spans() if s.name == "chat m")
    assert call.parent is not None and call.parent.span_id == parent.get_span_context().span_id
    trace_id, _ = _ids(recorder.headers[0]["traceparent"])
    assert trace_id == format(parent.get_span_context().trace_id, "032x")


def test_every_attempt_carries_the_same_traceparent(exporter: InMemorySpanExporter) -> None:
    recorder = Recorder(statuses=(503, 200))
    client, calls = _client(recorder, retries=1)
    with client:
        client.chat("m", [{"role": "user", "content": "hello"}])
    first, second = (h["traceparent"] for h in recorder.headers)
    assert first == second
    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes or {})["garden.attempts"] == 2 == calls[0].attempts


def test_a_failed_call_ends_its_span_with_an_error(exporter: InMemorySpanExporter) -> None:
    client, _ = _client(Recorder(statuses=(503,)))
    with client, pytest.raises(Exception, match="busy"):
        client.chat("m", [{"role": "user", "content": "hello"}])
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR


async def test_the_async_client_sends_it_too(exporter: InMemorySpanExporter) -> None:
    recorder = Recorder()
    client = AsyncClient("127.0.0.1:9", transport=httpx.MockTransport(recorder))
    async with client:
        chunks = await client.chat("m", [{"role": "user", "content": "x"}], stream=True)
        async for _ in chunks:
            pass
    (span,) = exporter.get_finished_spans()
    assert _ids(recorder.headers[0]["traceparent"])[1] == format(span.context.span_id, "016x")


def test_without_a_provider_only_a_current_context_is_passed_on() -> None:
    # The application set no tracer provider: nothing is recorded and a call on its own
    # sends no traceparent; inside a span context it got from elsewhere, that one is sent.
    recorder = Recorder()
    client, calls = _client(recorder)
    parent = trace.SpanContext(
        int("0af7651916cd43dd8448eb211c80319c", 16),
        int("b7ad6b7169203331", 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(1),
    )
    with client:
        client.chat("m", [{"role": "user", "content": "a"}])
        with trace.use_span(trace.NonRecordingSpan(parent)):
            client.chat("m", [{"role": "user", "content": "b"}])
    assert "traceparent" not in recorder.headers[0] and calls[0].trace_id is None
    assert recorder.headers[1]["traceparent"] == (
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    )
    assert calls[1].trace_id == "0af7651916cd43dd8448eb211c80319c"
