"""The console's per-minute series: quantiles from the log-scale histogram, the one-hour
ring, the window a route asks for, and the bound on model names."""

from __future__ import annotations

import random

import pytest

from modelgarden.telemetry.record import RequestRecord
from modelgarden.telemetry.series import WINDOW, Quantiles, Series

T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


def record(
    model: str = "m",
    *,
    backend: str = "local",
    status: int = 200,
    duration_ms: float = 100.0,
    ttft_ms: float | None = None,
    rate: float | None = None,
    prompt: int | None = None,
    completion: int | None = None,
) -> RequestRecord:
    return RequestRecord(
        request_id="r",
        started=T0,
        api="ollama",
        endpoint="/api/chat",
        model=model,
        backend=backend,
        status=status,
        stream=ttft_ms is not None,
        duration_ms=duration_ms,
        ttft_ms=ttft_ms,
        overhead_ms=0.1,
        prompt_tokens=prompt,
        completion_tokens=completion,
        tokens_per_s=rate,
    )


def test_quantiles_are_within_the_bucket_width_of_the_exact_ones() -> None:
    rng = random.Random(42)
    values = [rng.lognormvariate(5, 1.2) for _ in range(5000)]
    q = Quantiles()
    for v in values:
        q.add(v)
    ordered = sorted(values)
    for p in (0.5, 0.95, 0.99):
        exact = ordered[int(p * len(ordered)) - 1]
        got = q.quantile(p)
        assert got is not None and abs(got - exact) / exact < 0.1, (p, got, exact)
    assert Quantiles().quantile(0.5) is None


def test_one_value_reads_back_exactly_and_zero_is_allowed() -> None:
    q = Quantiles()
    q.add(123.4)
    assert q.quantile(0.5) == q.quantile(0.95) == 123.4
    z = Quantiles()
    z.add(0.0)
    z.add(0.0)
    assert z.quantile(0.5) == 0.0


def test_a_minute_of_traffic_becomes_one_point_per_model() -> None:
    s = Series()
    for ms in (100, 200, 300, 400):
        s.observe(record(duration_ms=ms, ttft_ms=ms / 10, rate=50.0, prompt=10, completion=5), T0)
    s.observe(record(status=502, duration_ms=1000), T0 + 30)
    s.observe(record("other", duration_ms=5), T0 + 59)
    out = s.window_since(60, T0 + 59)
    assert out["step"] == 60 and out["end"] == T0 + 60 and out["start"] == T0 - 59 * 60
    by_model = {m["model"]: m["points"] for m in out["models"]}
    assert list(by_model) == ["m", "other"]
    [point] = by_model["m"]
    assert point["t"] == T0
    assert point["requests"] == 5 and point["errors"] == 1
    assert 200 * 0.9 <= point["latency_p50_ms"] <= 300 * 1.1
    assert point["latency_p95_ms"] == pytest.approx(1000, rel=0.05)
    assert 10 * 0.9 <= point["ttft_p50_ms"] <= 30 * 1.1
    assert point["tokens_per_s"] == 50.0
    assert (point["prompt_tokens"], point["completion_tokens"]) == (40, 20)
    assert by_model["other"][0]["ttft_p50_ms"] is None
    assert by_model["other"][0]["tokens_per_s"] is None


def test_the_ring_keeps_one_hour_and_the_window_cuts_what_was_asked() -> None:
    s = Series()
    for minute in range(WINDOW + 10):
        s.observe(record(), T0 + minute * 60)
    now = T0 + (WINDOW + 9) * 60
    points = s.window_since(WINDOW, now)["models"][0]["points"]
    assert len(points) == WINDOW
    assert points[0]["t"] == T0 + 10 * 60 and points[-1]["t"] == now
    assert len(s.window_since(5, now)["models"][0]["points"]) == 5
    assert s.window_since(5, now + 3600)["models"] == []  # an idle hour later


def test_unrouted_names_are_not_kept_and_a_clock_stepping_back_counts_now() -> None:
    s = Series()
    for i in range(100):
        s.observe(record(f"made-up-{i}", backend=""), T0)
    s.observe(record(), T0 + 120)
    s.observe(record(), T0 + 60)  # the wall clock stepped back a minute
    out = s.window_since(60, T0 + 120)
    by_model = {m["model"]: m["points"] for m in out["models"]}
    assert set(by_model) == {"", "m"}
    assert by_model[""][0]["requests"] == 100
    assert [p["requests"] for p in by_model["m"]] == [2]


@pytest.mark.parametrize("value", [1e-9, 1.0, 1e7])
def test_extreme_values_stay_finite(value: float) -> None:
    q = Quantiles()
    q.add(value)
    assert q.quantile(0.5) == value
