"""Span shapes, in process: the server span of a request through the real app (a fake
backend behind it, ``httpx.ASGITransport`` in front), the queue, load and upstream spans a
backend makes, ``traceparent`` in and out, and tracing that is off or not installed.

Spans go to the SDK's in-memory exporter, synchronously.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from modelgarden.api.app import create_app
from modelgarden.backends.base import Api, BackendRequest, BackendResponse, described
from modelgarden.config import load_settings
from modelgarden.errors import BackendUnavailable
from modelgarden.gateway import Gateway
from modelgarden.telemetry.record import RequestRecord
from modelgarden.telemetry.tracing import (
    LOAD_SPAN,
    QUEUE_SPAN,
    UPSTREAM_SPAN,
    RequestTrace,
    Tracing,
    finish_reasons,
    safe_url,
    wanted,
)
from modelgarden.wire.ollama import ListModel, PsModel, ShowResponse
from tests.unit.test_scheduler import acquire, make, settle, spec

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"

LINES = [
    {"model": "m", "message": {"role": "assistant", "content": "Hi"}, "done": False},
    {
        "model": "m",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "length",
        "prompt_eval_count": 11,
        "eval_count": 3,
    },
]


class FakeBackend:
    """An Ollama-speaking backend that answers every chat with :data:`LINES` (or fails)."""

    kind = "fake"
    apis = frozenset({Api.OLLAMA})

    def __init__(self, name: str = "fake", fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.requests: list[BackendRequest] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_models(self) -> list[ListModel]:
        return []

    async def has_model(self, model: str) -> bool:
        return model.startswith("m")

    async def show(self, model: str, verbose: bool = False) -> ShowResponse:
        raise NotImplementedError

    async def running(self) -> list[PsModel]:
        return []

    def upstream_id(self, model: str) -> str:
        return model

    def describe(self) -> dict[str, Any]:
        return described(self, up=True, active=0, waiting=0, rejected=0)

    async def send(self, request: BackendRequest) -> BackendResponse:
        self.requests.append(request)
        if self.fail:
            raise BackendUnavailable("backend 'fake' cannot be reached")

        async def body() -> AsyncIterator[bytes]:
            for line in LINES:
                yield orjson.dumps(line) + b"\n"

        return BackendResponse(200, "application/x-ndjson", body(), Api.OLLAMA)


@pytest.fixture(autouse=True)
def plain_logging() -> Iterator[None]:
    """structlog as it is by default: an earlier test may have bound it to a stream of its
    own, closed since (the app here logs a line per request)."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Tracing:
    return Tracing.with_exporter(exporter, batch=False)


def _client(tmp_path: Path, backend: FakeBackend, tracing: Tracing | None) -> httpx.AsyncClient:
    settings = load_settings(models_dir=tmp_path / "models")
    app = create_app(settings, Gateway(settings, [backend]), tracing=tracing)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


async def _chat(client: httpx.AsyncClient, **headers: str) -> httpx.Response:
    body = {"model": "m:latest", "messages": [{"role": "user", "content": "hi"}]}
    return await client.post("/api/chat", json=body, headers=headers)


def _one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    spans = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(spans) == 1, [s.name for s in exporter.get_finished_spans()]
    return spans[0]


# --- through the app --------------------------------------------------------------------


async def test_a_streamed_request_is_one_server_span_with_genai_attributes(
    tmp_path: Path, exporter: InMemorySpanExporter, tracing: Tracing
) -> None:
    backend = FakeBackend()
    async with _client(tmp_path, backend, tracing) as client:
        response = await _chat(client, traceparent=TRACEPARENT)
    assert response.status_code == 200
    span = _one(exporter, "chat m:latest")
    assert span.kind is SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "m:latest"
    assert attrs["gen_ai.usage.input_tokens"] == 11
    assert attrs["gen_ai.usage.output_tokens"] == 3
    assert attrs["gen_ai.response.finish_reasons"] == ("length",)
    assert attrs["garden.backend"] == "fake"
    assert attrs["garden.request_id"] == response.headers["x-request-id"]
    assert attrs["http.response.status_code"] == 200
    assert span.status.status_code is StatusCode.UNSET
    (event,) = span.events
    assert event.name == "gen_ai.first_token"
    assert event.timestamp is not None and span.start_time is not None
    assert span.start_time <= event.timestamp <= (span.end_time or 0)
    # The backend gets the request's trace, to hang its own spans (and traceparent) on.
    trace = backend.requests[0].trace
    assert trace is not None and trace.span.get_span_context() == span.context


async def test_a_request_without_traceparent_starts_a_trace(
    tmp_path: Path, exporter: InMemorySpanExporter, tracing: Tracing
) -> None:
    async with _client(tmp_path, FakeBackend(), tracing) as client:
        await _chat(client, traceparent="00-not-a-valid-header")
    span = _one(exporter, "chat m:latest")
    assert span.parent is None and span.context.trace_id != 0


async def test_a_failed_request_has_an_error_status(
    tmp_path: Path, exporter: InMemorySpanExporter, tracing: Tracing
) -> None:
    async with _client(tmp_path, FakeBackend(fail=True), tracing) as client:
        response = await _chat(client)
    assert response.status_code == 502
    span = _one(exporter, "chat m:latest")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "backend 'fake' cannot be reached"
    assert dict(span.attributes or {})["error.type"] == "502"


async def test_a_refused_request_is_not_the_servers_error(
    tmp_path: Path, exporter: InMemorySpanExporter, tracing: Tracing
) -> None:
    async with _client(tmp_path, FakeBackend(), tracing) as client:
        response = await client.post("/api/chat", json={"model": "other", "messages": []})
    assert response.status_code == 404
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {})["error.type"] == "404"


async def test_tracing_off_gives_the_backend_no_trace(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with _client(tmp_path, backend, None) as client:
        assert (await _chat(client, traceparent=TRACEPARENT)).status_code == 200
    assert backend.requests[0].trace is None


# --- the spans backends make ------------------------------------------------------------


def _trace(tracing: Tracing, traceparent: str = TRACEPARENT) -> RequestTrace:
    return tracing.start([(b"traceparent", traceparent.encode())], 0, "rid", "/api/chat")


def _record(**changes: Any) -> RequestRecord:
    base: dict[str, Any] = {
        "request_id": "rid",
        "started": 0.0,
        "api": "ollama",
        "endpoint": "/api/chat",
        "model": "m",
        "backend": "local",
        "status": 200,
        "stream": True,
        "duration_ms": 5.0,
        "ttft_ms": None,
        "overhead_ms": 0.1,
        "prompt_tokens": None,
        "completion_tokens": None,
        "tokens_per_s": None,
    }
    return RequestRecord(**{**base, **changes})


async def test_queue_load_and_upstream_spans_hang_under_the_server_span(
    exporter: InMemorySpanExporter, tracing: Tracing
) -> None:
    h = make()
    trace = _trace(tracing)
    lease = await trace.queued(
        acquire(h, spec()),
        "local",
        lambda lease: (
            (*lease.load_window, {"garden.runner.pid": lease.runner.pid})
            if lease.load_window
            else None
        ),
    )
    upstream = trace.upstream("local")
    upstream.answered(200, lease.base_url)
    upstream.end()
    trace.end(_record(), 0, b"")
    server = _one(exporter, "chat m")
    queue, load, call = (_one(exporter, n) for n in (QUEUE_SPAN, LOAD_SPAN, UPSTREAM_SPAN))
    assert queue.parent is not None and queue.parent.span_id == server.context.span_id
    assert load.parent is not None and load.parent.span_id == queue.context.span_id
    assert call.parent is not None and call.parent.span_id == server.context.span_id
    assert call.kind is SpanKind.CLIENT
    assert dict(load.attributes or {})["garden.runner.pid"] == lease.runner.pid
    assert (queue.start_time or 0) <= (load.start_time or 0) <= (load.end_time or 0)
    assert (load.end_time or 0) <= (queue.end_time or 0)
    attrs = dict(call.attributes or {})
    assert attrs["server.address"] == "127.0.0.1" and attrs["http.response.status_code"] == 200
    # The traceparent sent upstream is the upstream span's: the next service is its child.
    sent = upstream.headers["traceparent"]
    assert sent == f"00-{TRACE_ID}-{format(call.context.span_id, '016x')}-01"
    # A second request on the loaded runner waited, but loaded nothing.
    h.scheduler.release(lease)
    await trace.queued(acquire(h, spec()), "local", lambda lease: None)
    assert len([s for s in exporter.get_finished_spans() if s.name == LOAD_SPAN]) == 1


async def test_a_wait_that_fails_ends_its_queue_span_with_the_error(
    exporter: InMemorySpanExporter, tracing: Tracing
) -> None:
    h = make(max_queue=1)
    h.gate = asyncio.Event()
    first = asyncio.ensure_future(acquire(h, spec()))
    await settle()
    trace = _trace(tracing)
    with pytest.raises(Exception, match="server busy"):
        await trace.queued(acquire(h, spec()), "local")
    queue = _one(exporter, QUEUE_SPAN)
    assert queue.status.status_code is StatusCode.ERROR
    assert dict(queue.attributes or {})["error.type"] == "Overloaded"
    h.gate.set()
    h.scheduler.release(await first)


def test_an_upstream_that_fails_ends_with_the_error(
    exporter: InMemorySpanExporter, tracing: Tracing
) -> None:
    upstream = _trace(tracing).upstream("remote")
    upstream.answered(502, "https://user:pw@up.example:8443/v1/chat/completions?key=k")
    upstream.failed(BackendUnavailable("backend 'remote' is unavailable"))
    span = _one(exporter, UPSTREAM_SPAN)
    attrs = dict(span.attributes or {})
    assert attrs["url.full"] == "https://up.example:8443/v1/chat/completions"
    assert attrs["server.port"] == 8443 and attrs["error.type"] == "BackendUnavailable"
    assert span.status.description == "backend 'remote' is unavailable"


def test_unsampled_requests_propagate_their_decision(exporter: InMemorySpanExporter) -> None:
    tracing = Tracing.with_exporter(exporter, batch=False)
    trace = _trace(tracing, f"00-{TRACE_ID}-{PARENT_ID}-00")
    upstream = trace.upstream("remote")
    assert upstream.headers["traceparent"].endswith("-00")
    upstream.end()
    trace.end(_record(), 0, b"")
    assert exporter.get_finished_spans() == ()


# --- pure parts, and off ----------------------------------------------------------------


def test_finish_reasons_from_either_family() -> None:
    ollama = b'{"done":true,"done_reason":"stop","eval_count":3}\n'
    assert finish_reasons(ollama) == ("stop",)
    sse = (
        b'data: {"choices":[{"index":0,"finish_reason":"length"}]}\n\n'
        b'data: {"choices":[{"index":1,"finish_reason":"length"}]}\n\n'
        b'data: {"choices":[],"usage":{"completion_tokens":2}}\n\ndata: [DONE]\n\n'
    )
    assert finish_reasons(sse) == ("length",)
    assert finish_reasons(b'{"message":{"content":"x"}}') == ()


def test_urls_in_spans_carry_no_credentials() -> None:
    assert safe_url("http://u:p@h:1/p?q=1#f") == "http://h:1/p"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_tracing_is_on_only_when_an_endpoint_is_set(environ: dict[str, str], on: bool) -> None:
    assert wanted(environ) is on
    assert (Tracing.from_environment(environ) is not None) is on


@pytest.mark.parametrize(
    ("endpoint", "operation"),
    [("/v1/messages", "chat"), ("/v1/responses", "chat"), ("/api/embed", "embeddings"),
     ("/v1/completions", "text_completion"), ("/v1/messages/count_tokens", None)],
)  # fmt: skip
def test_every_api_family_names_its_operation(
    exporter: InMemorySpanExporter, endpoint: str, operation: str | None
) -> None:
    tracing = Tracing.with_exporter(exporter, batch=False)
    tracing.start([], 0, "rid", endpoint).end(_record(endpoint=endpoint), 0, b"")
    (span,) = exporter.get_finished_spans()
    assert (span.attributes or {}).get("gen_ai.operation.name") == operation


def test_the_service_name_follows_otel_service_name(exporter: InMemorySpanExporter) -> None:
    default = Tracing.with_exporter(exporter, batch=False)
    named = Tracing.with_exporter(exporter, batch=False, environ={"OTEL_SERVICE_NAME": "gw-eu"})
    for tracing in (default, named):
        tracing.start([], 0, "rid", "/api/chat").end(_record(), 0, b"")
    first, second = exporter.get_finished_spans()
    assert first.resource.attributes["service.name"] == "modelgarden"
    assert "process.pid" in first.resource.attributes
    assert second.resource.attributes["service.name"] == "gw-eu"


#: What the ``otel`` extra adds (recent FastAPI versions need ``opentelemetry-api`` itself).
OTEL_EXTRA = ("opentelemetry.sdk", "opentelemetry.exporter")


def test_the_gateway_runs_without_opentelemetry(tmp_path: Path) -> None:
    # The SDK and exporter made unimportable: the app still builds, and an endpoint set
    # without them turns nothing on (one warning says why).
    script = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.startswith({OTEL_EXTRA!r}):
            raise ImportError(name)
sys.meta_path.insert(0, Block())
from modelgarden.api.app import create_app
from modelgarden.config import load_settings
from modelgarden.telemetry.tracing import Tracing
app = create_app(load_settings(models_dir=sys.argv[1]))
assert app.state.telemetry.tracing is None
assert Tracing.from_environment({{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}}) is None
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
    assert "OpenTelemetry is not installed" in result.stdout + result.stderr


def test_nothing_of_opentelemetry_is_imported_when_tracing_is_off(tmp_path: Path) -> None:
    script = (
        "import sys\nfrom modelgarden.api.app import create_app\n"
        "from modelgarden.config import load_settings\n"
        "create_app(load_settings(models_dir=sys.argv[1]))\n"
        f"print(sorted(m for m in sys.modules if m.startswith({OTEL_EXTRA!r})))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert result.stdout.strip() == "[]"
