"""The last hour of traffic, per model and per minute, for the console's charts.

``/metrics`` is cumulative; a chart over time wants samples. :class:`Series` keeps a ring
of one-minute buckets (the last :data:`WINDOW` minutes) fed from each finished
:class:`~modelgarden.telemetry.record.RequestRecord`. A request costs a dict lookup and a
few increments: latencies go into a sparse log-scale histogram (buckets 9% wide) whose
quantiles are read only when ``/garden/series`` asks, so the hot path never sorts.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from modelgarden.telemetry.record import RequestRecord

#: Minutes kept (the charts show the last hour).
WINDOW = 60
#: Histogram buckets grow by this factor: 2**(1/8), about 9%.
_BASE = 2 ** (1 / 8)
_LOG_BASE = math.log(_BASE)


class Quantiles:
    """A sparse log-scale histogram of positive values; quantiles read within 5%."""

    __slots__ = ("counts", "high", "low", "n")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.low = math.inf
        self.high = 0.0

    def add(self, value: float) -> None:
        """Count one value (O(1))."""
        index = math.floor(math.log(value) / _LOG_BASE) if value > 0 else -1000
        self.counts[index] = self.counts.get(index, 0) + 1
        self.n += 1
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1): its bucket's geometric middle, kept within the range
        of the values seen (so one value reads back exactly)."""
        if not self.n:
            return None
        rank = q * self.n
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                middle = _BASE ** (index + 0.5) if index > -1000 else 0.0
                return min(max(middle, self.low), self.high)
        return self.high


class Cell:
    """One model's traffic in one minute."""

    __slots__ = (
        "completion",
        "errors",
        "latency",
        "prompt",
        "rate_n",
        "rate_sum",
        "requests",
        "ttft",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency = Quantiles()
        #: Time to first token of streamed answers.
        self.ttft = Quantiles()
        self.rate_sum = 0.0
        self.rate_n = 0
        self.prompt = 0
        self.completion = 0

    def add(self, r: RequestRecord) -> None:
        """Count one request."""
        self.requests += 1
        if r.status >= 400:
            self.errors += 1
        self.latency.add(r.duration_ms)
        if r.ttft_ms is not None:
            self.ttft.add(r.ttft_ms)
        if r.tokens_per_s is not None:
            self.rate_sum += r.tokens_per_s
            self.rate_n += 1
        self.prompt += r.prompt_tokens or 0
        self.completion += r.completion_tokens or 0

    def point(self, minute: int) -> dict[str, Any]:
        """The cell as one chart point (``t``: the minute's start, Unix seconds)."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 2)

        return {
            "t": minute * 60,
            "requests": self.requests,
            "errors": self.errors,
            "latency_p50_ms": ms(self.latency.quantile(0.5)),
            "latency_p95_ms": ms(self.latency.quantile(0.95)),
            "ttft_p50_ms": ms(self.ttft.quantile(0.5)),
            "ttft_p95_ms": ms(self.ttft.quantile(0.95)),
            "tokens_per_s": round(self.rate_sum / self.rate_n, 1) if self.rate_n else None,
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
        }


class Series:
    """Owns the ring of per-minute, per-model cells; :meth:`observe` feeds a record in."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        #: ``(minute, cells by model)``, oldest first; minutes with no traffic are absent.
        self._ring: deque[tuple[int, dict[str, Cell]]] = deque(maxlen=window)

    def observe(self, r: RequestRecord, now: float | None = None) -> None:
        """Count one finished request in the current minute (O(1))."""
        minute = int((time.time() if now is None else now) // 60)
        ring = self._ring
        if not ring or ring[-1][0] < minute:
            ring.append((minute, {}))
        cells = ring[-1][1]  # a clock that stepped back counts in the newest minute
        # As in the metrics: a model no backend serves is not kept by its client-given name.
        model = r.model if r.backend else ""
        cell = cells.get(model)
        if cell is None:
            cell = cells[model] = Cell()
        cell.add(r)

    def window_since(self, minutes: int, now: float | None = None) -> dict[str, Any]:
        """The last ``minutes`` minutes (this one included), one series of points per model."""
        last = int((time.time() if now is None else now) // 60)
        first = last - minutes + 1
        by_model: dict[str, list[dict[str, Any]]] = {}
        for minute, cells in self._ring:
            if first <= minute <= last:
                for model, cell in cells.items():
                    by_model.setdefault(model, []).append(cell.point(minute))
        return {
            "step": 60,
            "start": first * 60,
            "end": (last + 1) * 60,
            "models": [{"model": m, "points": by_model[m]} for m in sorted(by_model)],
        }
