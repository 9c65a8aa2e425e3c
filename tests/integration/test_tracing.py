"""Traces from real gateways to a real OTLP/HTTP receiver on loopback.

Two gateways, as a team would run them: ``upstream`` serves the local model;
``front`` (one primary and one relay worker) has no model of its own and relays ``tiny``
to ``upstream`` through an ``ollama`` backend, and ``ghost`` to a backend that is down.
Both export to :class:`~tests.otlp_receiver.OTLPReceiver`; each test sends its own
``traceparent`` and looks at the spans of that trace: a streamed local request, a relayed
one (the upstream's server span is the child of the front's upstream span), a failed one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from tests.conftest import (
    DEFAULT_MODEL,
    GREEDY,
    GardenServer,
    free_port,
    start_server,
    stop_and_check,
    wait_until,
)
from tests.integration.test_routing import config
from tests.integration.test_workers import wait_for_workers
from tests.otlp_receiver import OTLPReceiver, ReceivedSpan

HELLO = [{"role": "user", "content": "Say hello."}]
OPTIONS = {**GREEDY, "num_predict": 4}


def otel_env(receiver: OTLPReceiver, service: str) -> dict[str, str]:
    """The standard variables: endpoint, service name, an exporter header, short batches."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=garden-tests",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    r = OTLPReceiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def upstream(
    receiver: OTLPReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GardenServer]:
    server = start_server(tmp_path_factory.mktemp("upstream"), **otel_env(receiver, "upstream"))
    yield server
    stop_and_check(server)


@pytest.fixture(scope="module")
def front(
    receiver: OTLPReceiver, upstream: GardenServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GardenServer]:
    root = tmp_path_factory.mktemp("front")
    toml = f"""
default_model = ""
[[backends]]
name = "upstream"
kind = "ollama"
urls = ["{upstream.url}"]
aliases = {{ "tiny" = "{DEFAULT_MODEL}" }}

[[backends]]
name = "down"
kind = "ollama"
urls = ["http://127.0.0.1:{free_port()}"]
models = ["ghost"]
retries = 0
"""
    server = start_server(
        root, GARDEN_CONFIG=config(root, toml), GARDEN_WORKERS="2", **otel_env(receiver, "front")
    )
    wait_for_workers(server, 1)
    yield server
    stop_and_check(server)


def new_trace() -> tuple[str, str, dict[str, str]]:
    """A trace id, the caller's span id, and the ``traceparent`` header naming them."""
    trace_id, parent = os.urandom(16).hex(), os.urandom(8).hex()
    return trace_id, parent, {"traceparent": f"00-{trace_id}-{parent}-01"}


def one(spans: list[ReceivedSpan], name: str, service: str | None = None) -> ReceivedSpan:
    found = [s for s in spans if s.name == name and (service is None or s.service == service)]
    assert len(found) == 1, [(s.service, s.name) for s in spans]
    return found[0]


def names(*wanted: tuple[str, str]) -> Callable[[list[ReceivedSpan]], bool]:
    """A condition: every (service, span name) pair has arrived."""

    def arrived(spans: list[ReceivedSpan]) -> bool:
        have = {(s.service, s.name) for s in spans}
        return all(w in have for w in wanted)

    return arrived


def unload(server: GardenServer) -> None:
    body = {"model": DEFAULT_MODEL, "keep_alive": 0}
    httpx.post(server.url + "/api/generate", json=body, timeout=60).raise_for_status()
    assert wait_until(lambda: not httpx.get(server.url + "/api/ps").json()["models"], 30)


def test_a_streamed_local_request(receiver: OTLPReceiver, upstream: GardenServer) -> None:
    unload(upstream)  # so that this request loads the model, whatever ran before
    trace_id, parent, headers = new_trace()
    body = {"model": DEFAULT_MODEL, "messages": HELLO, "stream": True, "options": OPTIONS}
    with httpx.stream(
        "POST", upstream.url + "/api/chat", json=body, headers=headers, timeout=120
    ) as answer:
        lines = [orjson.loads(line) for line in answer.iter_lines() if line]
    assert answer.status_code == 200 and lines[-1]["done"]
    final = lines[-1]
    server_name = f"chat {DEFAULT_MODEL}"
    receiver.wait_for(
        lambda spans: names(("upstream", server_name))([s for s in spans if s.trace_id == trace_id])
    )
    spans = receiver.in_trace(trace_id)
    server = one(spans, server_name)
    assert server.kind == "server" and server.parent_id == parent
    attrs = server.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == DEFAULT_MODEL
    assert attrs["gen_ai.usage.input_tokens"] == final["prompt_eval_count"]
    assert attrs["gen_ai.usage.output_tokens"] == final["eval_count"] == 4
    assert attrs["gen_ai.response.finish_reasons"] == (final["done_reason"],) == ("length",)
    assert attrs["garden.backend"] == "local" and attrs["http.response.status_code"] == 200
    assert attrs["garden.request_id"] == answer.headers["x-request-id"]
    assert server.status == "unset"
    (first,) = server.events
    assert first.name == "gen_ai.first_token"
    assert server.start_ns < first.time_ns < server.end_ns
    assert 0 < first.attributes["gen_ai.server.time_to_first_token"] < 60
    queue, load, call = (
        one(spans, n) for n in ("garden.queue", "garden.runner.load", "garden.upstream")
    )
    assert queue.parent_id == call.parent_id == server.span_id
    assert load.parent_id == queue.span_id
    assert queue.start_ns <= load.start_ns < load.end_ns <= queue.end_ns <= call.start_ns
    assert call.kind == "client" and call.attributes["server.address"] == "127.0.0.1"
    assert call.end_ns <= server.end_ns
    assert load.attributes["garden.runner.pid"] > 0
    assert server.resource["service.name"] == "upstream"
    assert server.resource["process.pid"] == upstream.proc.pid
    assert any(r.get("x-tenant") == "garden-tests" for r in receiver.requests)


def test_a_relayed_request_continues_the_trace_upstream(
    receiver: OTLPReceiver, front: GardenServer, upstream: GardenServer
) -> None:
    trace_id, parent, headers = new_trace()
    body = {"model": "tiny", "prompt": "1, 2, 3,", "raw": True, "stream": True, "options": OPTIONS}
    with httpx.stream(
        "POST", front.url + "/api/generate", json=body, headers=headers, timeout=120
    ) as answer:
        text = "".join(orjson.loads(line)["response"] for line in answer.iter_lines() if line)
    assert answer.status_code == 200 and text
    wanted = names(
        ("front", "text_completion tiny"), ("upstream", f"text_completion {DEFAULT_MODEL}")
    )
    receiver.wait_for(lambda spans: wanted([s for s in spans if s.trace_id == trace_id]))
    spans = receiver.in_trace(trace_id)
    outer = one(spans, "text_completion tiny", "front")
    call = one(spans, "garden.upstream", "front")
    inner = one(spans, f"text_completion {DEFAULT_MODEL}", "upstream")
    assert outer.parent_id == parent
    assert call.parent_id == outer.span_id and call.kind == "client"
    # The traceparent the front sent is its upstream span: the upstream gateway continues it.
    assert inner.parent_id == call.span_id
    assert call.attributes["server.port"] == int(upstream.host.split(":")[1])
    assert call.attributes["http.response.status_code"] == 200
    assert outer.attributes["gen_ai.request.model"] == "tiny"
    assert outer.attributes["gen_ai.response.model"] == DEFAULT_MODEL
    assert outer.attributes["garden.backend"] == "upstream"
    assert outer.attributes["gen_ai.usage.output_tokens"] == 4
    # The relay worker took the connection and exported its own spans.
    (worker,) = wait_for_workers(front, 1)
    assert outer.resource["process.pid"] == call.resource["process.pid"] == worker.pid
    assert inner.resource["process.pid"] == upstream.proc.pid


def test_a_failed_request_has_an_error_status(receiver: OTLPReceiver, front: GardenServer) -> None:
    trace_id, parent, headers = new_trace()
    body = {"model": "ghost", "messages": HELLO, "stream": False}
    answer = httpx.post(front.url + "/api/chat", json=body, headers=headers, timeout=60)
    assert answer.status_code >= 500
    message = answer.json()["error"]
    receiver.wait_for(
        lambda spans: names(("front", "chat ghost"))([s for s in spans if s.trace_id == trace_id])
    )
    spans = receiver.in_trace(trace_id)
    server = one(spans, "chat ghost")
    assert server.parent_id == parent
    assert server.status == "error" and server.status_message == message
    assert server.attributes["error.type"] == str(answer.status_code)
    assert server.attributes["garden.backend"] == "down"
    call = one(spans, "garden.upstream")
    assert call.status == "error" and call.attributes["error.type"] == "BackendUnavailable"
    assert not [s for s in spans if s.service == "upstream"]
