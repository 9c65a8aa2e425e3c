"""Prometheus metrics, in a registry of the app's own (never the process-wide default).

Per-request metrics are fed from each finished :class:`RequestRecord`; the labelled
children for a label combination are looked up once and kept, so a request costs a dict
lookup and a few increments. What the gateway holds (queues, loaded models, breakers,
the usage queue) is read when ``/metrics`` is scraped, from memory: a scrape never calls or
wakes a backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modelgarden import __version__
from modelgarden.telemetry.record import RequestRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
RATE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


class _Children:
    """The labelled metric children one label combination feeds."""

    __slots__ = ("completion", "duration", "overhead", "prompt", "rate", "requests", "ttft")

    def __init__(self, m: Metrics, r: RequestRecord, model: str) -> None:
        self.requests = m.requests.labels(r.api, r.endpoint, model, r.backend, str(r.status))
        self.duration = m.duration.labels(r.api, r.endpoint, model, r.backend)
        self.ttft = m.ttft.labels(r.api, r.endpoint, model, r.backend)
        self.overhead = m.overhead.labels(r.api, r.endpoint)
        self.prompt = m.tokens.labels(model, r.backend, "prompt")
        self.completion = m.tokens.labels(model, r.backend, "completion")
        self.rate = m.rate.labels(model, r.backend)


class Metrics:
    """Owns the registry and the per-request metrics; :meth:`observe` feeds a record in."""

    def __init__(self, state: Callable[[], Iterable[Metric]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        route = ["api", "endpoint", "model", "backend"]
        self.requests = Counter(
            "garden_requests", "Inference requests by outcome status.", [*route, "status"],
            registry=reg,
        )  # fmt: skip
        self.duration = Histogram(
            "garden_request_duration_seconds", "Inference request latency, arrival to last byte.",
            route, buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.ttft = Histogram(
            "garden_time_to_first_token_seconds", "Streamed answers: arrival to first body byte.",
            route, buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.overhead = Histogram(
            "garden_gateway_overhead_seconds",
            "Time spent in the gateway itself before the answer started, backend excluded.",
            ["api", "endpoint"], buckets=OVERHEAD_BUCKETS, registry=reg,
        )  # fmt: skip
        self.tokens = Counter(
            "garden_tokens", "Tokens in (prompt) and out (completion).",
            ["model", "backend", "kind"], registry=reg,
        )  # fmt: skip
        self.rate = Histogram(
            "garden_tokens_per_second", "Completion tokens per second of generation.",
            ["model", "backend"], buckets=RATE_BUCKETS, registry=reg,
        )  # fmt: skip
        reg.register(_StateCollector(state))
        self._children: dict[tuple[str, str, str, str, int], _Children] = {}

    def observe(self, r: RequestRecord) -> None:
        """Count one finished request."""
        # A model no backend serves stays unlabelled: client-chosen names must not grow
        # the label set without bound.
        model = r.model if r.backend else ""
        key = (r.api, r.endpoint, model, r.backend, r.status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = _Children(self, r, model)
        children.requests.inc()
        children.duration.observe(r.duration_ms / 1000)
        children.overhead.observe(r.overhead_ms / 1000)
        if r.ttft_ms is not None:
            children.ttft.observe(r.ttft_ms / 1000)
        if r.prompt_tokens:
            children.prompt.inc(r.prompt_tokens)
        if r.completion_tokens:
            children.completion.inc(r.completion_tokens)
        if r.tokens_per_s is not None:
            children.rate.observe(r.tokens_per_s)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Metrics read from the gateway's state at scrape time (see :func:`state_metrics`)."""

    def __init__(self, state: Callable[[], Iterable[Metric]]) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        return self._state()

    def describe(self) -> Iterable[Metric]:
        return []


def state_metrics(backends: list[dict[str, Any]], usage: dict[str, Any]) -> list[Metric]:
    """Gauges and counters for backends (as :func:`describe` reports them) and usage."""
    info = GaugeMetricFamily("garden_info", "The gateway's version.", labels=["version"])
    info.add_metric([__version__], 1)
    return [info, *_backend_metrics(backends), *_usage_metrics(usage)]


def _backend_metrics(backends: list[dict[str, Any]]) -> list[Metric]:
    up = GaugeMetricFamily(
        "garden_backend_up", "1 while the backend can take requests (a breaker closed).",
        labels=["backend", "kind"],
    )  # fmt: skip
    breaker = GaugeMetricFamily(
        "garden_circuit_breaker_state", "1 for each replica's current breaker state.",
        labels=["backend", "replica", "state"],
    )  # fmt: skip
    queue = GaugeMetricFamily(
        "garden_queue_depth", "Requests waiting for a slot.", labels=["backend"]
    )
    active = GaugeMetricFamily(
        "garden_requests_in_flight", "Requests holding a slot.", labels=["backend"]
    )
    rejected = CounterMetricFamily(
        "garden_queue_rejections", "Requests turned away with a full queue.", labels=["backend"]
    )
    loaded = GaugeMetricFamily("garden_models_loaded", "Models in memory.", labels=["backend"])
    memory = GaugeMetricFamily(
        "garden_model_memory_bytes", "Estimated memory of each loaded model.",
        labels=["backend", "model"],
    )  # fmt: skip
    for b in backends:
        name = b["name"]
        up.add_metric([name, b["kind"]], 1 if b["up"] else 0)
        queue.add_metric([name], b["waiting"])
        active.add_metric([name], b["active"])
        rejected.add_metric([name], b["rejected"])
        for replica in b.get("replicas", []):
            for state in ("closed", "open", "half_open"):
                value = 1 if replica["breaker"] == state else 0
                breaker.add_metric([name, replica["url"], state], value)
        if "models" in b:
            loaded.add_metric([name], len(b["models"]))
            for m in b["models"]:
                memory.add_metric([name, m["name"]], m["size"])
    return [up, breaker, queue, active, rejected, loaded, memory]


def _usage_metrics(usage: dict[str, Any]) -> list[Metric]:
    depth = GaugeMetricFamily("garden_usage_queue_depth", "Usage records waiting to be written.")
    depth.add_metric([], usage["queued"])
    written = CounterMetricFamily("garden_usage_records_written", "Usage records written.")
    written.add_metric([], usage["written"])
    dropped = CounterMetricFamily(
        "garden_usage_records_dropped", "Usage records dropped because the queue was full."
    )
    dropped.add_metric([], usage["dropped"])
    failed = CounterMetricFamily("garden_usage_write_failures", "Failed usage batch writes.")
    failed.add_metric([], usage["failures"])
    return [depth, written, dropped, failed]
