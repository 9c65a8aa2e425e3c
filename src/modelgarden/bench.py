"""``garden bench``: latency, time to first token and tokens/s through a running gateway.

:func:`measure` sends streamed ``/api/chat`` requests for one model at a few concurrency
levels (closed loop: each worker sends its next request when the last one ends) after one
unmeasured warm-up request, and summarises each level. :func:`compare` sets a result
against a saved baseline and names every figure that got worse by more than a threshold,
so that a run can guard an upgrade. Everything but :func:`measure` is pure.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

#: Deterministic sampling; ``repeat_penalty`` 1 so the model really produces every token.
OPTIONS = {"temperature": 0, "seed": 42, "repeat_penalty": 1.0}
PROMPT = "Count from one to one hundred in words, separated by commas."
#: Figures compared with a baseline, and whether a higher value is better.
COMPARED = {"latency_p50_ms": False, "ttft_p50_ms": False, "tokens_per_s_p50": True}


class BenchError(Exception):
    """The benchmark could not run (no server, an unknown model, a bad baseline)."""


@dataclass(frozen=True)
class Sample:
    """One measured request."""

    ok: bool
    latency_s: float
    ttft_s: float | None
    tokens: int
    error: str | None = None


async def _one(client: httpx.AsyncClient, body: bytes) -> Sample:
    started = time.perf_counter()
    first: float | None = None
    final: dict[str, Any] = {}
    try:
        async with client.stream("POST", "/api/chat", content=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                return Sample(False, time.perf_counter() - started, None, 0, text[:200])
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                if first is None:
                    first = time.perf_counter()
                record = orjson.loads(line)
                if "error" in record:
                    return Sample(False, time.perf_counter() - started, None, 0, record["error"])
                if record.get("done"):
                    final = record
    except httpx.TransportError as exc:
        raise BenchError(f"could not reach the gateway: {exc}") from None
    end = time.perf_counter()
    ttft = None if first is None else first - started
    return Sample(bool(final), end - started, ttft, int(final.get("eval_count") or 0))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(samples: list[Sample], wall_s: float, concurrency: int) -> dict[str, Any]:
    """One concurrency level's figures (milliseconds, tokens per second)."""
    good = [s for s in samples if s.ok]
    latency = [s.latency_s * 1000 for s in good]
    ttft = [s.ttft_s * 1000 for s in good if s.ttft_s is not None]
    rates = [
        s.tokens / (s.latency_s - s.ttft_s)
        for s in good
        if s.ttft_s is not None and s.tokens > 1 and s.latency_s > s.ttft_s
    ]

    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {
        "concurrency": concurrency,
        "requests": len(samples),
        "errors": len(samples) - len(good),
        "latency_p50_ms": r(_percentile(latency, 0.5)),
        "latency_p95_ms": r(_percentile(latency, 0.95)),
        "ttft_p50_ms": r(_percentile(ttft, 0.5)),
        "ttft_p95_ms": r(_percentile(ttft, 0.95)),
        "tokens_per_s_p50": r(statistics.median(rates) if rates else None),
        "throughput_tokens_per_s": r(sum(s.tokens for s in good) / wall_s if wall_s else None),
    }


async def _level(
    client: httpx.AsyncClient, body: bytes, concurrency: int, requests: int
) -> dict[str, Any]:
    left = requests
    samples: list[Sample] = []

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            samples.append(await _one(client, body))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
    return summarise(samples, time.perf_counter() - started, concurrency)


async def measure(
    base_url: str,
    model: str,
    concurrency: list[int],
    requests: int,
    tokens: int,
    prompt: str = PROMPT,
) -> dict[str, Any]:
    """Run the benchmark; ``requests`` per level, each answer at most ``tokens`` long."""
    body = orjson.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
            "options": {**OPTIONS, "num_predict": tokens},
        }
    )
    levels = []
    timeout = httpx.Timeout(600.0, connect=5.0)
    limits = httpx.Limits(max_connections=max(concurrency), max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:
        warm = await _one(client, body)  # loads the model; not measured
        if not warm.ok:
            raise BenchError(f"model {model!r} did not answer: {warm.error}")
        for level in concurrency:
            levels.append(await _level(client, body, level, requests))
    return {
        "model": model,
        "gateway": base_url,
        "tokens": tokens,
        "requests_per_level": requests,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "levels": levels,
    }


def compare(
    current: dict[str, Any], baseline: dict[str, Any], threshold: float
) -> list[dict[str, Any]]:
    """Each compared figure of each level found in both runs, with its change and whether
    it is a regression (worse by more than ``threshold``, a fraction)."""
    try:
        before = {int(level["concurrency"]): level for level in baseline["levels"]}
    except (KeyError, TypeError, ValueError):
        raise BenchError("baseline is not a garden bench result (no levels)") from None
    out = []
    for level in current["levels"]:
        old = before.get(int(level["concurrency"]))
        if old is None:
            continue
        for name, higher_better in COMPARED.items():
            new_value, old_value = level.get(name), old.get(name)
            if not new_value or not old_value:
                continue
            change = new_value / old_value - 1
            worse = -change if higher_better else change
            out.append(
                {
                    "concurrency": level["concurrency"],
                    "figure": name,
                    "baseline": old_value,
                    "current": new_value,
                    "change": round(change, 4),
                    "regression": worse > threshold,
                }
            )
    return out


def table(result: dict[str, Any]) -> list[list[str]]:
    """The result as rows of text for the terminal."""

    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    header = ["CONCURRENCY", "REQUESTS", "ERRORS", "LATENCY P50 MS", "P95 MS"]
    header += ["TTFT P50 MS", "P95 MS", "TOKENS/S", "TOTAL TOKENS/S"]
    keys = ["concurrency", "requests", "errors", "latency_p50_ms", "latency_p95_ms"]
    keys += ["ttft_p50_ms", "ttft_p95_ms", "tokens_per_s_p50", "throughput_tokens_per_s"]
    return [header] + [[cell(level.get(k)) for k in keys] for level in result["levels"]]
